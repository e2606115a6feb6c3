"""The plugin's fixtures: emulators, the environment and settings pointing at them, a registry,
a fresh topic, names that do not collide, a push-token issuer; and the helpers they return.

Each emulator fixture is the session's own when ``cloudclients_emulators`` started one
(``_plugin``, ``_session``), else one started on first use and stopped when the session ends.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .._clients import ClientRegistry
from .._config import Settings
from ._emulators import (
    EmulatorKind,
    EmulatorNotInstalledError,
    EmulatorProcess,
    Emulators,
    start_pubsub_emulator,
    start_storage_emulator,
)
from ._push import PushTokenIssuer, default_push_token_issuer
from ._session import emulator_settings_for, session_of, session_project

__all__ = ["TopicHandle", "pull_messages"]


def _session_or_new(
    config: pytest.Config, kind: EmulatorKind, start: Callable[[], EmulatorProcess]
) -> Iterator[EmulatorProcess]:
    """The session's emulator of *kind* when the ini started one, else a new one (stopped at
    the end); skips the tests that need it when it is not installed."""
    session = session_of(config)
    started = getattr(session.emulators, kind) if session is not None and session.emulators else None
    if started is not None:
        yield started
        return
    try:
        proc = start()
    except EmulatorNotInstalledError as exc:
        pytest.skip(str(exc))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def pubsub_emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorProcess]:
    """A Pub/Sub emulator running for the whole session (the session's own, when
    ``cloudclients_emulators`` names one)."""
    kind = request.config.getoption("--pubsub-emulator")
    project = session_project(request.config)
    yield from _session_or_new(request.config, "pubsub", lambda: start_pubsub_emulator(kind, project=project))


@pytest.fixture(scope="session")
def storage_emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorProcess]:
    """gcp-storage-emulator running for the whole session (the session's own, when
    ``cloudclients_emulators`` names it)."""
    yield from _session_or_new(request.config, "storage", start_storage_emulator)


@pytest.fixture(scope="session")
def cloudclients_emulators(request: pytest.FixtureRequest) -> Emulators:
    """The session's emulators as one :class:`~cloudclients.testing.Emulators`: those
    ``cloudclients_emulators`` names (and only those), or, when it names none, both, started on
    first use."""
    session = session_of(request.config)
    if session is not None and session.emulators is not None:
        return session.emulators
    return Emulators(pubsub=request.getfixturevalue("pubsub_emulator"),
                     storage=request.getfixturevalue("storage_emulator"), project=session_project(request.config))


@pytest.fixture
def cloudclients_reset(request: pytest.FixtureRequest, cloudclients_emulators: Emulators) -> Emulators:
    """Empty the emulators before this test (and create the session's topology again), so it
    sees no topic, message, bucket or object of another test. Opt in per test or module with
    ``@pytest.mark.usefixtures("cloudclients_reset")``, or for all with an autouse fixture."""
    cloudclients_emulators.reset()
    session = session_of(request.config)
    if session is not None and session.topology is not None and session.emulators is cloudclients_emulators:
        session.create_topology()
    return cloudclients_emulators


@pytest.fixture
def cloudclients_env(
    request: pytest.FixtureRequest,
    pubsub_emulator: EmulatorProcess,
    storage_emulator: EmulatorProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Point the environment at the emulators for one test (``GOOGLE_CLOUD_PROJECT``: the
    session's project); return the variables."""
    env = {**pubsub_emulator.env, **storage_emulator.env, "GOOGLE_CLOUD_PROJECT": session_project(request.config)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def emulator_settings(
    request: pytest.FixtureRequest, pubsub_emulator: EmulatorProcess, storage_emulator: EmulatorProcess
) -> Settings:
    """Settings pointing at both emulators and naming the session's project (no environment involved)."""
    return emulator_settings_for(Emulators(pubsub_emulator, storage_emulator, session_project(request.config)))


@pytest.fixture
def emulator_registry(emulator_settings: Settings) -> Iterator[ClientRegistry]:
    """A registry on the emulators, closed after the test."""
    registry = ClientRegistry.from_settings(emulator_settings, name="test-admin")
    try:
        yield registry
    finally:
        registry.close(timeout=10)


@pytest.fixture(scope="session")
def push_token_issuer() -> PushTokenIssuer:
    """The process's :func:`~cloudclients.testing.default_push_token_issuer`: point
    ``CLOUDCLIENTS_PUSH_CERTS_URL`` at its ``certs_url``; tokens from its ``sign_push_token(…)``
    and from the module-level ``cloudclients.testing.sign_push_token(…)`` verify there."""
    return default_push_token_issuer()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Return a function making collision-free resource names for this test."""
    test = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:30] or "t"

    def make(prefix: str = "r") -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:10]}"

    return make


@dataclass(frozen=True)
class TopicHandle:
    """A topic and a subscription on it, created for one test."""

    project: str
    topic: str
    subscription: str
    registry: ClientRegistry

    @property
    def topic_id(self) -> str:
        """The short topic name."""
        return self.topic.rsplit("/", 1)[1]

    def pull(self, expected: int, timeout: float = 20.0) -> list[Any]:
        """Pull and acknowledge until *expected* messages arrived or *timeout* passed."""
        return pull_messages(self.registry, self.subscription, expected, timeout)


def pull_messages(registry: ClientRegistry, subscription: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Pull (and ack) messages from *subscription* with unary Pull calls until
    *expected* arrived or *timeout* elapsed; return the ``PubsubMessage`` objects."""
    subscriber = registry.subscriber
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": 1000},
            timeout=max(1.0, min(5.0, deadline - time.monotonic())),
        )
        if response.received_messages:
            subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )
            received.extend(m.message for m in response.received_messages)
    return received


@pytest.fixture
def pubsub_topic(emulator_registry: ClientRegistry, unique_name: Callable[[str], str]) -> Iterator[TopicHandle]:
    """A fresh topic with one subscription in the session's project, deleted after the test."""
    project = emulator_registry.project
    topic = f"projects/{project}/topics/{unique_name('topic')}"
    subscription = f"projects/{project}/subscriptions/{unique_name('sub')}"
    emulator_registry.publisher.create_topic(name=topic)
    emulator_registry.subscriber.create_subscription(
        request={"name": subscription, "topic": topic, "ack_deadline_seconds": 30}
    )
    try:
        yield TopicHandle(project, topic, subscription, emulator_registry)
    finally:
        # Best effort: the emulator may be gone (tests that kill it on purpose).
        with contextlib.suppress(Exception):
            emulator_registry.subscriber.delete_subscription(subscription=subscription, timeout=5)
        with contextlib.suppress(Exception):
            emulator_registry.publisher.delete_topic(topic=topic, timeout=5)
