"""Shared fixtures. The emulator fixtures come from the cloudclients pytest plugin
(``cloudclients.testing``, loaded through its entry point like a user would)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from flask import Flask, has_app_context, has_request_context

from cloudclients import CloudClients, ReceivedMessage, push_endpoint
from cloudclients.testing import TEST_PROJECT
from tests.helpers import MakeApp, PushApp

_EMULATOR_ENV = (
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without ambient Google/emulator settings and must not
    leak a Flask context."""
    for key in _EMULATOR_ENV:
        monkeypatch.delenv(key, raising=False)
    for key in [k for k in os.environ if k.startswith("CLOUDCLIENTS_") and not k.startswith("CLOUDCLIENTS_TEST_")]:
        monkeypatch.delenv(key)  # settings are read from the environment too
    yield
    assert not has_app_context() and not has_request_context(), "a test leaked a Flask context"


@pytest.fixture
def base_config() -> dict[str, object]:
    """Minimal valid app.config for unit tests (no emulator needed)."""
    return {"CLOUDCLIENTS_PROJECT": "cloudclients-test", "CLOUDCLIENTS_PUBSUB_EMULATOR_HOST": "127.0.0.1:1",
            "CLOUDCLIENTS_STORAGE_EMULATOR_HOST": "http://127.0.0.1:1"}


@pytest.fixture
def make_app(request: pytest.FixtureRequest) -> Iterator[MakeApp]:
    """``make_app(**settings)``: a Flask app with cloudclients initialised on it — project
    ``TEST_PROJECT``, exit handlers off, then *settings*, keys without their prefix
    (``PUSH_AUTH="platform"`` sets ``CLOUDCLIENTS_PUSH_AUTH``).

    ``name=`` names the app (default: the test module), ``config=`` adds other ``app.config``
    keys, ``init=False`` leaves ``CloudClients(app)`` to the test. After the test every registry
    made on these apps is closed (within its ``CLOUDCLIENTS_SHUTDOWN_TIMEOUT``).
    """
    made: list[Flask] = []

    def make(*, name: str | None = None, config: Mapping[str, Any] | None = None, init: bool = True,
             **settings: Any) -> Flask:
        app = Flask(name or request.module.__name__)
        app.config.update({"CLOUDCLIENTS_PROJECT": TEST_PROJECT, "CLOUDCLIENTS_EXIT_HANDLERS": False, **(config or {})})
        app.config.update({f"CLOUDCLIENTS_{key}": value for key, value in settings.items()})
        made.append(app)
        if init:
            CloudClients(app)
        return app

    yield make
    for app in made:
        if "cloudclients" in app.extensions:  # init_app ran (not refused, not left to a test that did not call it)
            CloudClients.get_registry(app).close()


@pytest.fixture
def push_app(make_app: MakeApp) -> PushApp:
    """``push_app(**settings)``: an app from ``make_app(**settings)`` with one ``@push_endpoint`` at /push,
    and the list of messages it received."""

    def make(**settings: Any) -> tuple[Flask, list[ReceivedMessage]]:
        app = make_app(**settings)
        received: list[ReceivedMessage] = []

        @app.post("/push")
        @push_endpoint
        def push(message: ReceivedMessage) -> None:
            received.append(message)

        return app, received

    return make


def pytest_report_header() -> str:
    return f"GRPC_ENABLE_FORK_SUPPORT={os.environ.get('GRPC_ENABLE_FORK_SUPPORT', '<unset>')}"
