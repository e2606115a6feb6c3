"""What the plugin set up for a test run — its emulators, topology, exported environment and
production shield — and how the fixtures find it (:func:`session_of`)."""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass
from typing import Any

import pytest

from .._clients import ClientRegistry
from .._config import Settings
from ._emulators import EmulatorKind, Emulators
from ._production import Shield
from ._topology import Topology

__all__ = ["TEST_PROJECT", "emulator_registry_for"]

#: The project the plugin's emulators and fixtures name, unless ``GOOGLE_CLOUD_PROJECT`` is set.
TEST_PROJECT = "cloudclients-test"


@dataclass
class Session:
    """What the plugin started or changed for this session, to undo at the end."""

    project: str = TEST_PROJECT
    kinds: tuple[EmulatorKind, ...] = ()
    emulators: Emulators | None = None
    topology: Topology | None = None
    environ: dict[str, str | None] | None = None
    shield: Shield | None = None
    startup_seconds: float = 0.0
    deferred_to_workers: bool = False
    _registry: ClientRegistry | None = None

    def registry(self) -> ClientRegistry:
        """Clients on the session's emulators (built once: the reset fixture reuses them)."""
        if self._registry is None:
            assert self.emulators is not None
            self._registry = emulator_registry_for(self.emulators, name="cloudclients-topology")
        return self._registry

    def create_topology(self) -> None:
        """Create the session's topology (again) on its emulators."""
        assert self.topology is not None
        try:
            self.topology.create(self.registry())
        except Exception as exc:
            reason = " ".join(str(exc).split())
            raise pytest.UsageError(f"cloudclients: creating the topology failed: {reason}") from None

    def stop_emulators(self) -> None:
        """Close the clients and stop the emulators. Idempotent."""
        if self._registry is not None:
            with contextlib.suppress(Exception):
                self._registry.close(timeout=5)
            self._registry = None
        if self.emulators is not None:
            self.emulators.stop()
            self.emulators = None

    def close(self) -> None:
        """Stop what was started and restore the environment. Idempotent; also runs at exit."""
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        self.stop_emulators()
        for key, value in (self.environ or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.environ = None
        if self.shield is not None:
            self.shield.close()
            self.shield = None


SESSION_KEY = pytest.StashKey[Session]()


def session_of(config: pytest.Config) -> Session | None:
    """What the plugin set up for this run (``None`` when it configured nothing)."""
    return config.stash.get(SESSION_KEY, None)


def default_project() -> str:
    """``GOOGLE_CLOUD_PROJECT`` now, else :data:`TEST_PROJECT` (a session's project, read when it begins)."""
    return os.environ.get("GOOGLE_CLOUD_PROJECT") or TEST_PROJECT


def session_project(config: pytest.Config) -> str:
    """The session's project: ``GOOGLE_CLOUD_PROJECT`` as it was when the session began, else
    :data:`TEST_PROJECT`."""
    session = session_of(config)
    return session.project if session is not None else default_project()


def emulator_settings_for(emulators: Emulators) -> Settings:
    """Settings naming *emulators*' project and hosts (no environment involved)."""
    config: dict[str, Any] = {"CLOUDCLIENTS_PROJECT": emulators.project, "CLOUDCLIENTS_PUBLISH_TIMEOUT": 15}
    if emulators.pubsub is not None:
        config["CLOUDCLIENTS_PUBSUB_EMULATOR_HOST"] = emulators.pubsub.host
    if emulators.storage is not None:
        config["CLOUDCLIENTS_STORAGE_EMULATOR_HOST"] = emulators.storage.host
    return Settings.from_mapping(config, environ={})


def emulator_registry_for(emulators: Emulators, name: str = "cloudclients-test") -> ClientRegistry:
    """A registry whose clients talk to *emulators* (close it when done)."""
    return ClientRegistry.from_settings(emulator_settings_for(emulators), name=name)
