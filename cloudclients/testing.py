"""pytest plugin: emulators, emulator-pointed settings and unique resource names.

Installed with ``pip install cloudclients[testing]`` and loaded automatically
(``pytest11`` entry point). Fixtures:

``pubsub_emulator`` (session)
    A running Pub/Sub emulator (:class:`~cloudclients._emulators.EmulatorProcess`).
    ``--pubsub-emulator=auto|cloudclients|official`` (or the environment
    variable ``CLOUDCLIENTS_TEST_PUBSUB_EMULATOR``) chooses which; ``auto``
    prefers this project's emulator. Tests are skipped, with the reason, when
    none is installed.
``storage_emulator`` (session)
    A running ``gcp-storage-emulator``.
``cloudclients_env``
    Sets ``PUBSUB_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST`` and
    ``GOOGLE_CLOUD_PROJECT`` for one test (before any client is built) and
    returns them; restored afterwards.
``emulator_settings``
    :class:`~cloudclients.Settings` pointing at both emulators.
``emulator_registry``
    A :class:`~cloudclients.ClientRegistry` built from ``emulator_settings``,
    closed after the test.
``unique_name``
    ``unique_name("orders")`` → ``"orders-<test>-<random>"``: resource names
    that never collide between tests, runs or processes.
``pubsub_topic``
    A fresh topic with one subscription on the emulator:
    a :class:`TopicHandle`, with :meth:`TopicHandle.pull` to read messages back.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ._clients import ClientRegistry
from ._config import Settings
from ._emulators import (
    EmulatorNotInstalledError,
    EmulatorProcess,
    free_port,
    start_pubsub_emulator,
    start_storage_emulator,
)

__all__ = ["TEST_PROJECT", "TopicHandle", "free_port", "pull_messages"]

TEST_PROJECT = "cloudclients-test"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cloudclients")
    group.addoption(
        "--pubsub-emulator",
        choices=("auto", "cloudclients", "official"),
        default=os.environ.get("CLOUDCLIENTS_TEST_PUBSUB_EMULATOR", "auto"),
        help="Pub/Sub emulator for the pubsub_emulator fixture (default: auto).",
    )


@pytest.fixture(scope="session")
def pubsub_emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorProcess]:
    """A Pub/Sub emulator running for the whole session."""
    kind = request.config.getoption("--pubsub-emulator")
    try:
        proc = start_pubsub_emulator(kind, project=TEST_PROJECT)
    except EmulatorNotInstalledError as exc:
        pytest.skip(str(exc))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def storage_emulator() -> Iterator[EmulatorProcess]:
    """gcp-storage-emulator running for the whole session."""
    try:
        proc = start_storage_emulator()
    except EmulatorNotInstalledError as exc:
        pytest.skip(str(exc))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def cloudclients_env(
    pubsub_emulator: EmulatorProcess,
    storage_emulator: EmulatorProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Point the environment at the emulators for one test; return the variables."""
    env = {**pubsub_emulator.env, **storage_emulator.env, "GOOGLE_CLOUD_PROJECT": TEST_PROJECT}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def emulator_settings(pubsub_emulator: EmulatorProcess, storage_emulator: EmulatorProcess) -> Settings:
    """Settings pointing at both emulators (no environment involved)."""
    return Settings.from_mapping(
        {
            "CLOUDCLIENTS_PROJECT": TEST_PROJECT,
            "CLOUDCLIENTS_PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
            "CLOUDCLIENTS_STORAGE_EMULATOR_HOST": storage_emulator.host,
            "CLOUDCLIENTS_PUBLISH_TIMEOUT": 15,
        },
        environ={},
    )


@pytest.fixture
def emulator_registry(emulator_settings: Settings) -> Iterator[ClientRegistry]:
    """A registry on the emulators, closed after the test."""
    registry = ClientRegistry.from_settings(emulator_settings, name="test-admin")
    try:
        yield registry
    finally:
        registry.close(timeout=10)


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
    """A fresh topic with one subscription, deleted after the test."""
    topic = f"projects/{TEST_PROJECT}/topics/{unique_name('topic')}"
    subscription = f"projects/{TEST_PROJECT}/subscriptions/{unique_name('sub')}"
    emulator_registry.publisher.create_topic(name=topic)
    emulator_registry.subscriber.create_subscription(
        request={"name": subscription, "topic": topic, "ack_deadline_seconds": 30}
    )
    try:
        yield TopicHandle(TEST_PROJECT, topic, subscription, emulator_registry)
    finally:
        # Best effort: the emulator may be gone (tests that kill it on purpose).
        with contextlib.suppress(Exception):
            emulator_registry.subscriber.delete_subscription(subscription=subscription, timeout=5)
        with contextlib.suppress(Exception):
            emulator_registry.publisher.delete_topic(topic=topic, timeout=5)
