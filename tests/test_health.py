"""Health: registry.ping() checks each client against its service with a bounded timeout, and the
optional blueprint answers per-check status and latency as JSON — 200 when all pass, 503 when one
fails (refused connection, a server that never answers, a background stream that ended)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

import cloudclients
from cloudclients import ClientRegistry, Settings
from cloudclients.testing import TEST_PROJECT, EmulatorProcess, free_port
from tests.helpers import MakeApp, wait_for
from tests.servers import gunicorn


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback TCP server that accepts connections and never answers (a hung service)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def health_app(make_app: MakeApp) -> MakeApp:
    """``health_app(pubsub_host, storage_url, timeout=2.0)``: an app serving /healthz."""

    def make(pubsub_host: str, storage_url: str, timeout: float = 2.0) -> Flask:
        app = make_app(PUBSUB_EMULATOR_HOST=pubsub_host, STORAGE_EMULATOR_HOST=storage_url, HEALTH_TIMEOUT=timeout)
        app.register_blueprint(cloudclients.health_blueprint())
        return app

    return make


def test_ping_reaches_every_service(emulator_registry: ClientRegistry) -> None:
    """Against the emulators every built-in client answers: ok, a latency, no error."""
    results = emulator_registry.ping(timeout=5)
    assert set(results) == {"publisher", "subscriber", "storage"}
    for result in results.values():
        assert result["ok"] and result["error"] is None and result["ms"] >= 0
    json.dumps(results)  # JSON-serialisable as is
    print(f"\nping against the emulators: { {k: v['ms'] for k, v in results.items()} } ms")


def test_ping_selects_clients_and_refuses_unknown_names(emulator_registry: ClientRegistry) -> None:
    """names= restricts the checks; an unknown name is a KeyError naming the registered clients."""
    assert set(emulator_registry.ping(timeout=5, names=["storage"])) == {"storage"}
    with pytest.raises(KeyError, match="registered"):
        emulator_registry.ping(names=["bigquery"])


def test_ping_of_a_custom_client_and_a_client_without_ping() -> None:
    """register(..., ping=) adds a check; a failing ping reports its exception type and message."""
    registry = ClientRegistry("custom")
    registry.register("good", object, ping=lambda client, timeout: None)
    registry.register("bad", object, ping=lambda client, timeout: (_ for _ in ()).throw(OSError("no route")))
    registry.register("plain", object)
    results = registry.ping(timeout=1)
    assert set(results) == {"good", "bad"}
    assert results["good"]["ok"] and not results["bad"]["ok"]
    assert results["bad"]["error"] == "OSError: no route"
    registry.close()


def test_healthz_is_200_with_per_check_latency(
    pubsub_emulator: EmulatorProcess, storage_emulator: EmulatorProcess, health_app: MakeApp
) -> None:
    """GET /healthz against the emulators: 200, status ok, each check ok with its milliseconds."""
    app = health_app(pubsub_emulator.host, storage_emulator.host)
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"publisher", "subscriber", "storage"}
    assert all(c["ok"] and isinstance(c["ms"], float) for c in body["checks"].values())
    assert response.headers["Cache-Control"] == "no-store"


def test_healthz_is_503_when_pubsub_refuses_connections(
    storage_emulator: EmulatorProcess, health_app: MakeApp
) -> None:
    """Nothing listens on the Pub/Sub port: the Pub/Sub checks fail saying the emulator is not
    running (Storage stays ok) → 503."""
    app = health_app(f"127.0.0.1:{free_port()}", storage_emulator.host)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert response.get_json()["status"] == "fail"
    assert not checks["publisher"]["ok"] and not checks["subscriber"]["ok"]
    for kind in ("publisher", "subscriber"):
        assert checks[kind]["error"].startswith("EmulatorUnreachableError"), checks[kind]
        assert "not reachable — is it running?" in checks[kind]["error"]
    assert checks["storage"]["ok"]


@pytest.mark.slow
def test_healthz_answers_within_its_timeout_when_services_hang(
    silent_server: str, health_app: MakeApp
) -> None:
    """Both services accept connections and never answer: every check fails once the 1 s health
    timeout is spent, and the endpoint still answers (503) instead of hanging."""
    app = health_app(silent_server, f"http://{silent_server}", timeout=1.0)
    began = time.monotonic()
    response = app.test_client().get("/healthz")
    elapsed = time.monotonic() - began
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert not any(c["ok"] for c in checks.values()), checks
    assert elapsed < 10, f"the health endpoint took {elapsed:.1f} s with a 1 s timeout"  # a bound, not a benchmark
    print(f"\nhealthz with hung services: answered in {elapsed:.2f} s; {checks}")


def test_an_ended_background_stream_fails_health(
    pubsub_emulator: EmulatorProcess, storage_emulator: EmulatorProcess, health_app: MakeApp
) -> None:
    """A background subscription whose stream ended (subscription missing) makes /healthz 503."""
    app = health_app(pubsub_emulator.host, storage_emulator.host)
    sub = cloudclients.subscribe("missing-subscription", lambda m: None, app=app)
    client = app.test_client()
    client.get("/healthz")  # the first request starts the stream
    assert wait_for(lambda: sub.stats()["error"] is not None, 30, interval=0.05), "the stream never ended"
    response = client.get("/healthz")
    assert response.status_code == 503
    check = response.get_json()["checks"][f"background:projects/{TEST_PROJECT}/subscriptions/missing-subscription"]
    assert not check["ok"] and "NotFound" in check["error"]


def test_health_report_outside_the_blueprint(
    pubsub_emulator: EmulatorProcess, storage_emulator: EmulatorProcess, health_app: MakeApp
) -> None:
    """health_report() runs the same checks from any app context (a CLI command, a cron job)."""
    app = health_app(pubsub_emulator.host, storage_emulator.host)
    with app.app_context():
        ok, report = cloudclients.health_report(checks=["storage"])
    assert ok and set(report["checks"]) == {"storage"}


def test_settings_health_timeout_is_used() -> None:
    """The configured CLOUDCLIENTS_HEALTH_TIMEOUT is what the blueprint passes to ping()."""
    settings = Settings.from_mapping({"CLOUDCLIENTS_PROJECT": TEST_PROJECT, "CLOUDCLIENTS_HEALTH_TIMEOUT": "0.25"}, {})
    assert settings.health_timeout == 0.25


@pytest.mark.slow
def test_healthz_under_gunicorn(cloudclients_env: dict[str, str]) -> None:
    """A real gunicorn worker answers /healthz 200 with every check ok against the emulators."""
    with gunicorn(["-w", "1", "--threads", "4"], cloudclients_env, app="tests.apps.ops_app:app") as server:
        bodies: list[dict[str, Any]] = []
        for _ in range(5):
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=15) as response:
                assert response.status == 200
                bodies.append(json.loads(response.read()))
    assert all(b["status"] == "ok" for b in bodies)
    latencies = {name: [b["checks"][name]["ms"] for b in bodies] for name in bodies[0]["checks"]}
    print(f"\nhealthz under gunicorn, 5 calls, ms per check: {latencies}")


def test_unknown_health_path_is_404(pubsub_emulator: EmulatorProcess, storage_emulator: EmulatorProcess,
                                    make_app: MakeApp) -> None:
    """The blueprint serves only its path (a custom one here)."""
    app = make_app(PUBSUB_EMULATOR_HOST=pubsub_emulator.host, STORAGE_EMULATOR_HOST=storage_emulator.host)
    app.register_blueprint(cloudclients.health_blueprint("/-/ready", checks=["storage"]))
    client = app.test_client()
    assert client.get("/healthz").status_code == 404
    assert client.get("/-/ready").get_json()["checks"].keys() == {"storage"}
