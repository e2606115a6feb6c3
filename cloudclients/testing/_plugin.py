"""The pytest plugin: emulators before collection, isolation, no production, fixtures.

Loaded automatically once ``cloudclients[testing]`` is installed (``pytest11``
entry point). Two ini lines (or the matching command-line flags) are all a
project needs::

    [pytest]
    cloudclients_emulators = pubsub storage
    cloudclients_topology = topology.json

The named emulators start before any conftest or test module is imported —
apps created at import time (``import main`` at the top of a test file) see
``PUBSUB_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST`` and ``GOOGLE_CLOUD_PROJECT``
— the topology is created, and everything stops when the session ends. Under
pytest-xdist each worker gets its own emulators.

While the plugin is active, tests cannot reach production: the metadata server
is a loopback black hole, gcloud's user credentials are out of sight, and a
cloudclients client that would use real credentials raises instead — unless
``cloudclients_allow_production = true`` (``--cloudclients-allow-production``),
or a test is marked ``@pytest.mark.cloudclients_allow_production``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from .. import _guard
from .._clients import ClientRegistry
from .._config import Settings
from ._emulators import (
    EmulatorError,
    EmulatorKind,
    EmulatorNotInstalledError,
    EmulatorProcess,
    Emulators,
    start_emulators,
    start_pubsub_emulator,
    start_storage_emulator,
)
from ._push import PushTokenIssuer, default_push_token_issuer
from ._topology import Topology, TopologyError, load_topology

__all__ = ["TEST_PROJECT", "TopicHandle", "pull_messages"]

#: The project the plugin's emulators and fixtures name, unless ``GOOGLE_CLOUD_PROJECT`` is set.
TEST_PROJECT = "cloudclients-test"

_ALLOW_MARK = "cloudclients_allow_production"
_GUARD_FIX = (
    "Point it at an emulator (cloudclients_emulators = pubsub storage in the pytest ini, or the "
    "cloudclients_env fixture), or allow production explicitly: cloudclients_allow_production = true, "
    "or @pytest.mark.cloudclients_allow_production on the test."
)


# -- options ------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cloudclients")
    group.addoption(
        "--pubsub-emulator",
        choices=("auto", "cloudclients", "official"),
        default=os.environ.get("CLOUDCLIENTS_TEST_PUBSUB_EMULATOR", "auto"),
        help="Pub/Sub emulator for the session and the pubsub_emulator fixture (default: auto, this project's "
             "when installed).",
    )
    group.addoption("--cloudclients-emulators", default=None, metavar="KINDS",
                    help="Emulators to start before collection, e.g. 'pubsub storage' (ini: cloudclients_emulators).")
    group.addoption("--cloudclients-topology", default=None, metavar="FILE",
                    help="Topology JSON to create on them (ini: cloudclients_topology).")
    group.addoption("--cloudclients-allow-production", action="store_true", default=None,
                    help="Let clients use real credentials (ini: cloudclients_allow_production).")
    parser.addini("cloudclients_emulators", "Emulators to start before collection: pubsub and/or storage.",
                  type="args", default=[])
    parser.addini("cloudclients_topology", "Topology JSON (same as cloudclients-emulator --topology), relative "
                  "to the ini file.", default="")
    parser.addini("cloudclients_allow_production", "Let clients use real Google credentials during tests.",
                  type="bool", default=False)


def _cli(config: pytest.Config, dest: str) -> Any:
    # In pytest_load_initial_conftests the options are only pre-parsed: read them there.
    known = getattr(config, "known_args_namespace", None)
    value = getattr(known, dest, None) if known is not None else None
    return value if value is not None else getattr(config.option, dest, None)


def _option(config: pytest.Config, name: str) -> Any:
    """An option of ours: the command-line flag if given, else the ini value."""
    value = _cli(config, f"cloudclients_{name}")
    return config.getini(f"cloudclients_{name}") if value is None else value


# -- session set-up, before any conftest is imported ------------------------------------------


@dataclass
class _Session:
    """What the plugin started or changed for this session, to undo at the end."""

    emulators: Emulators | None = None
    topology: Topology | None = None
    environ: dict[str, str | None] | None = None
    black_hole: socket.socket | None = None
    gcloud_dir: tempfile.TemporaryDirectory[str] | None = None
    startup_seconds: float = 0.0


_SESSION_KEY = pytest.StashKey[_Session]()
_EARLY: _Session | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    # Runs for installed plugins before the first conftest.py is imported: the
    # earliest point at which an app created at import time can be helped.
    global _EARLY  # noqa: PLW0603 - handed to pytest_configure
    _EARLY = _set_up(early_config)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{_ALLOW_MARK}: let this test's clients use real Google credentials.")
    global _EARLY
    session, _EARLY = (_EARLY if _EARLY is not None else _set_up(config)), None
    config.stash[_SESSION_KEY] = session


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION_KEY, None)
    if session is not None:
        _tear_down(session)


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash.get(_SESSION_KEY, None)
    if session is None or session.emulators is None:
        return []
    names = [f"{p.kind} at {p.host}" for p in (session.emulators.pubsub, session.emulators.storage) if p]
    return [f"cloudclients: emulators {', '.join(names)} (started in {session.startup_seconds:.2f} s)"]


def _set_up(config: pytest.Config) -> _Session:
    session = _Session()
    try:
        if not _option(config, "allow_production"):
            _refuse_production(session)
        kinds = _kinds(config)
        if kinds and not _xdist_controller(config):
            _start_session_emulators(config, session, kinds)
    except BaseException:
        _tear_down(session)
        raise
    return session


def _kinds(config: pytest.Config) -> list[EmulatorKind]:
    raw = _option(config, "emulators")
    kinds = shlex.split(raw) if isinstance(raw, str) else list(raw)
    unknown = [k for k in kinds if k not in ("pubsub", "storage")]
    if unknown:
        raise pytest.UsageError(f"cloudclients_emulators: unknown emulator(s) {unknown}; use pubsub and/or storage")
    return cast(list[EmulatorKind], kinds)


def _xdist_controller(config: pytest.Config) -> bool:
    # The controller of `pytest -n N` runs no tests: each worker starts its own emulators.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return False
    numprocesses = getattr(config.option, "numprocesses", None) or getattr(
        getattr(config, "known_args_namespace", None), "numprocesses", None)
    return bool(numprocesses)


def _start_session_emulators(config: pytest.Config, session: _Session, kinds: list[EmulatorKind]) -> None:
    topology_file = _option(config, "topology")
    if topology_file:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        path = Path(topology_file) if Path(topology_file).is_absolute() else base / topology_file
        try:
            session.topology = load_topology(path)
        except TopologyError as exc:
            raise pytest.UsageError(f"cloudclients: {exc}") from None
        if session.topology.buckets and "storage" not in kinds:
            raise pytest.UsageError(f"cloudclients: topology {str(path)!r} lists buckets but cloudclients_emulators "
                                    "has no storage")
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or TEST_PROJECT
    started = time.monotonic()
    try:
        session.emulators = start_emulators(kinds, project=project, pubsub_kind=_cli(config, "pubsub_emulator"))
    except (EmulatorError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise pytest.UsageError(f"cloudclients: could not start the emulators {kinds}: {first}") from None
    session.environ = _export({**session.emulators.env, "GOOGLE_CLOUD_PROJECT": project})
    if session.topology is not None:
        _create(session.topology, session.emulators)
    session.startup_seconds = time.monotonic() - started


def _create(topology: Topology, emulators: Emulators) -> None:
    registry = emulator_registry_for(emulators, name="cloudclients-topology")
    try:
        topology.create(registry)
    except Exception as exc:
        raise pytest.UsageError(f"cloudclients: creating the topology failed: {exc}") from None
    finally:
        registry.close(timeout=5)


def _refuse_production(session: _Session) -> None:
    # The metadata server is where Cloud Run/GCE credentials and projects come from: a
    # bound-but-not-listening loopback port refuses every connection at once.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    session.black_hole = hole
    address = f"127.0.0.1:{hole.getsockname()[1]}"
    session.gcloud_dir = tempfile.TemporaryDirectory(prefix="cloudclients-no-gcloud-")
    changes: dict[str, str | None] = {
        "GCE_METADATA_HOST": address, "GCE_METADATA_IP": address,
        "CLOUDSDK_CONFIG": session.gcloud_dir.name,  # no `gcloud auth application-default login` credentials
        "GOOGLE_APPLICATION_CREDENTIALS": None,
    }
    previous = _export(changes)
    session.environ = {**(session.environ or {}), **previous}
    _guard.refuse_production(_GUARD_FIX)


def _export(changes: dict[str, str | None]) -> dict[str, str | None]:
    """Apply *changes* to os.environ (``None`` unsets); return what to restore."""
    previous: dict[str, str | None] = {}
    for key, value in changes.items():
        if key == "GOOGLE_CLOUD_PROJECT" and os.environ.get(key):
            continue  # the user's own project wins
        previous[key] = os.environ.get(key)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return previous


def _tear_down(session: _Session) -> None:
    if session.emulators is not None:
        session.emulators.stop()
        session.emulators = None
    for key, value in (session.environ or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    session.environ = None
    if session.black_hole is not None:
        session.black_hole.close()
        session.black_hole = None
    if session.gcloud_dir is not None:
        session.gcloud_dir.cleanup()
        session.gcloud_dir = None
    _guard.refuse_production(None)


@pytest.fixture(autouse=True)
def _cloudclients_production_mark(request: pytest.FixtureRequest) -> Iterator[None]:
    """Lifts the no-production guard for a test marked ``cloudclients_allow_production``."""
    if request.node.get_closest_marker(_ALLOW_MARK) is None:
        yield
        return
    _guard.refuse_production(None)
    try:
        yield
    finally:
        if not _option(request.config, "allow_production"):
            _guard.refuse_production(_GUARD_FIX)


# -- emulator fixtures --------------------------------------------------------------------------


def _session_or_new(
    config: pytest.Config, kind: EmulatorKind, start: Callable[[], EmulatorProcess]
) -> Iterator[EmulatorProcess]:
    """The session's emulator of *kind* when the ini started one, else a new one (stopped at
    the end); skips the tests that need it when it is not installed."""
    session = config.stash.get(_SESSION_KEY, None)
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
    yield from _session_or_new(request.config, "pubsub", lambda: start_pubsub_emulator(kind, project=TEST_PROJECT))


@pytest.fixture(scope="session")
def storage_emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorProcess]:
    """gcp-storage-emulator running for the whole session (the session's own, when
    ``cloudclients_emulators`` names it)."""
    yield from _session_or_new(request.config, "storage", start_storage_emulator)


@pytest.fixture(scope="session")
def cloudclients_emulators(pubsub_emulator: EmulatorProcess, storage_emulator: EmulatorProcess) -> Emulators:
    """Both emulators of the session as one :class:`~cloudclients.testing.Emulators`."""
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or TEST_PROJECT
    return Emulators(pubsub=pubsub_emulator, storage=storage_emulator, project=project)


@pytest.fixture
def cloudclients_reset(request: pytest.FixtureRequest, cloudclients_emulators: Emulators) -> Emulators:
    """Empty the emulators before this test (and create the session's topology again), so it
    sees no topic, message, bucket or object of another test. Opt in per test or module with
    ``@pytest.mark.usefixtures("cloudclients_reset")``, or for all with an autouse fixture."""
    cloudclients_emulators.reset()
    session = request.config.stash.get(_SESSION_KEY, None)
    if session is not None and session.topology is not None:
        _create(session.topology, cloudclients_emulators)
    return cloudclients_emulators


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


def emulator_registry_for(emulators: Emulators, name: str = "cloudclients-test") -> ClientRegistry:
    """A registry whose clients talk to *emulators* (close it when done)."""
    config: dict[str, Any] = {"CLOUDCLIENTS_PROJECT": emulators.project, "CLOUDCLIENTS_PUBLISH_TIMEOUT": 15}
    if emulators.pubsub is not None:
        config["CLOUDCLIENTS_PUBSUB_EMULATOR_HOST"] = emulators.pubsub.host
    if emulators.storage is not None:
        config["CLOUDCLIENTS_STORAGE_EMULATOR_HOST"] = emulators.storage.host
    return ClientRegistry.from_settings(Settings.from_mapping(config, environ={}), name=name)


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
