"""The README quickstart runs as written, against the emulators."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import pytest
from google.api_core.exceptions import AlreadyExists, Conflict

from cloudclients import ClientRegistry, CloudClients, Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_quickstart_runs_as_written(cloudclients_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The first Python block of the README serves POST /orders: publishes and stores a receipt."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert code is not None, "README has no python block"
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    admin = ClientRegistry.from_settings(Settings.from_mapping({"CLOUDCLIENTS_PROJECT": "my-project"}))
    try:
        # The session's emulators may already hold them from an earlier test.
        with contextlib.suppress(AlreadyExists):
            admin.publisher.create_topic(name="projects/my-project/topics/orders")
        with contextlib.suppress(Conflict):
            admin.storage.create_bucket("receipts")
        namespace: dict[str, Any] = {"__name__": "quickstart"}
        exec(compile(code.group(1), str(README), "exec"), namespace)
        app = namespace["app"]
        assert app.test_client().post("/orders").status_code == 204
        assert admin.storage.bucket("receipts").blob("o-1").download_as_bytes() == b"..."
        assert CloudClients.get_registry(app).stats()["clients"]["publisher"]["constructions"] == 1
        CloudClients.get_registry(app).close()
    finally:
        admin.close()


def test_the_readme_configuration_table_is_the_declared_one() -> None:
    """The README's configuration table is exactly what the settings declare (key, fallback,
    default, rule): regenerate it from cloudclients.Settings.table() when this fails."""
    table = Settings.table()
    assert table in README.read_text(), "README's table is stale; paste Settings.table():\n" + table


def test_every_public_name_is_documented() -> None:
    """Each name in cloudclients.__all__ appears in the README or docs/."""
    import cloudclients

    docs = README.read_text() + "".join(p.read_text() for p in (README.parent / "docs").glob("*.md"))
    missing = [name for name in cloudclients.__all__ if not re.search(rf"\b{re.escape(name)}\b", docs)]
    assert missing == []


def test_every_public_testing_name_is_documented() -> None:
    """Each name in cloudclients.testing.__all__ appears in docs/api.md."""
    import cloudclients.testing

    api = (README.parent / "docs" / "api.md").read_text()
    missing = [name for name in cloudclients.testing.__all__ if f"`{name}" not in api]
    assert missing == []
