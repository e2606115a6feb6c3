"""Shared fixtures. The emulator fixtures come from the cloudclients pytest plugin
(``cloudclients.testing``, loaded through its entry point like a user would)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from flask import has_app_context, has_request_context

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


def pytest_report_header() -> str:
    return f"GRPC_ENABLE_FORK_SUPPORT={os.environ.get('GRPC_ENABLE_FORK_SUPPORT', '<unset>')}"
