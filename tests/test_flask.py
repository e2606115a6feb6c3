"""The Flask extension: init_app creates nothing, helpers live on g, misuse gets clear errors."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, g

import cloudclients
from cloudclients import CloudClients, current_registry, get_client, get_publisher, get_storage, get_subscriber
from tests.helpers import MakeApp


def test_init_app_creates_no_client(make_app: MakeApp, base_config: dict[str, Any]) -> None:
    """After init_app the registry exists but holds no client (safe for a preload master)."""
    app = make_app(config=base_config)
    stats = CloudClients.get_registry(app).stats()
    assert all(not c["alive"] and c["constructions"] == 0 for c in stats["clients"].values())


def test_app_factory_pattern(make_app: MakeApp, base_config: dict[str, Any]) -> None:
    """One extension object initialised on two apps keeps separate state per app."""
    cc = CloudClients()
    a = make_app(name="a", config=base_config, init=False)
    b = make_app(name="b", config=base_config, init=False, PROJECT="other-project")
    cc.init_app(a)
    cc.init_app(b)
    assert CloudClients.get_settings(a).project == "cloudclients-test"
    assert CloudClients.get_settings(b).project == "other-project"
    assert CloudClients.get_registry(a) is not CloudClients.get_registry(b)
    assert not hasattr(cc, "app")


def test_second_registration_is_refused(make_app: MakeApp, base_config: dict[str, Any]) -> None:
    """init_app twice on one app raises RuntimeError saying what to do instead."""
    app = make_app(name="app", config=base_config)
    with pytest.raises(RuntimeError, match=r"already registered on app 'app'.*once per app"):
        CloudClients(app)


@pytest.mark.parametrize("helper", [get_publisher, get_subscriber, get_storage, current_registry])
def test_helpers_outside_app_context_raise(helper: Any) -> None:
    """Outside an app context each helper raises a RuntimeError naming the fix."""
    with pytest.raises(RuntimeError, match="needs a Flask application context"):
        helper()


def test_helper_on_uninitialised_app_raises() -> None:
    """Inside an app without the extension, the error says to call CloudClients(app)."""
    app = Flask("bare")
    with app.app_context(), pytest.raises(RuntimeError, match=r"not initialised on app 'bare'.*CloudClients\(app\)"):
        get_publisher()


def test_one_client_per_process_across_calls_and_requests(make_app: MakeApp, base_config: dict[str, Any]) -> None:
    """Every call in every request returns the one process-wide client, built once."""
    app = make_app(config=base_config)
    seen = []

    @app.get("/")
    def view() -> str:
        pub = get_publisher()
        assert get_publisher() is pub
        seen.append(pub)
        return "ok"

    client = app.test_client()
    assert client.get("/").status_code == 200
    assert client.get("/").status_code == 200
    assert seen[0] is seen[1]
    assert CloudClients.get_registry(app).stats()["clients"]["publisher"]["constructions"] == 1


def test_helpers_leave_nothing_on_g_and_clients_outlive_the_context(
    make_app: MakeApp, base_config: dict[str, Any]
) -> None:
    """The helpers keep no per-request reference (so none can outlive a fork); the
    process-wide client stays alive after the context ends."""
    app = make_app(config=base_config)
    with app.app_context():
        get_storage()
        get_publisher()
        assert [k for k in vars(g._get_current_object()) if "cloudclients" in k] == []  # type: ignore[attr-defined]
    assert CloudClients.get_registry(app).peek("storage") is not None


def test_two_apps_get_separate_clients(make_app: MakeApp, base_config: dict[str, Any]) -> None:
    """Two apps in one process with different settings get different registries and clients."""
    a = make_app(name="a", config=base_config)
    b = make_app(name="b", config=base_config, BATCH_MAX_MESSAGES=10)
    with a.app_context():
        pa = get_publisher()
    with b.app_context():
        pb = get_publisher()
    assert pa is not pb
    assert (pa.batch_settings.max_messages, pb.batch_settings.max_messages) == (100, 10)


def test_custom_client_registered_on_the_registry(make_app: MakeApp, base_config: dict[str, Any]) -> None:
    """Any other client registered on the app's registry is reachable with get_client()."""
    app = make_app(config=base_config)
    CloudClients.get_registry(app).register("bigquery", lambda: {"fake": "bq"})
    with app.app_context():
        assert get_client("bigquery") == {"fake": "bq"}


def test_public_api() -> None:
    """Every name in __all__ exists and is documented."""
    for name in cloudclients.__all__:
        obj = getattr(cloudclients, name)
        if name != "__version__":
            assert obj.__doc__, name
