"""Fast failure with the default settings: a request against an unreachable Pub/Sub or Storage
answers well inside gunicorn's default 30 s worker timeout, and against a stopped emulator it
says so at once ("emulator at HOST:PORT not reachable — is it running?")."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from google.api_core.exceptions import GoogleAPICallError

import cloudclients
from cloudclients import StorageUnavailableError, get_storage
from cloudclients.testing import TEST_PROJECT, free_port
from tests.helpers import MakeApp
from tests.servers import gunicorn


class BlackHole:
    """A TCP server that accepts connections, reads whatever comes and never answers."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            conn.setblocking(False)
            self._conns.append(conn)  # held open, never read: the peer waits for an answer

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._conns:
            conn.close()
        self._sock.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture
def fail_fast_app(make_app: MakeApp) -> MakeApp:
    """``fail_fast_app(**settings)``: an app publishing at /publish, storing at /store, reading at
    /read; its clients are closed within 1 s after the test (their HTTP pools hold sockets)."""

    def make(**settings: Any) -> Flask:
        app = make_app(name="fail-fast", SHUTDOWN_TIMEOUT=1, **settings)

        @app.post("/publish")
        def publish() -> dict[str, str]:
            return {"id": cloudclients.publish("orders", b"x").result(timeout=60)}

        @app.post("/store")
        def store() -> str:
            get_storage().bucket("receipts").blob("r-1").upload_from_string(b"x")
            return "stored"

        @app.get("/read")
        def read() -> bytes:
            return get_storage().bucket("receipts").blob("r-1").download_as_bytes()

        return app

    return make


def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_stopped_pubsub_emulator_is_reported_at_once(
    fail_fast_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens at the emulator's address: the publish fails without retrying for the whole
    publish timeout, and the 503 says the emulator is not reachable."""
    host = f"127.0.0.1:{free_port()}"
    app = fail_fast_app(PUBSUB_EMULATOR_HOST=host)
    with caplog.at_level(logging.ERROR, logger="cloudclients"):
        response, seconds = timed(lambda: app.test_client().post("/publish"))
    print(f"\nstopped Pub/Sub emulator: 503 after {seconds:.2f} s")
    assert response.status_code == 503
    assert f"emulator at {host} not reachable — is it running?" in response.get_data(as_text=True)
    assert seconds < 5.0  # the default publish timeout is 10 s: the refusal ended the retries early


@pytest.mark.parametrize("call", ["get_topic", "pull", "acknowledge", "create_subscription"])
def test_direct_calls_against_a_stopped_emulator_fail_at_once(fail_fast_app: MakeApp, call: str) -> None:
    """Nothing listens at the emulator's address: a direct call through get_publisher() /
    get_subscriber() raises EmulatorUnreachableError saying so, instead of the library retrying
    for 60 s (get_topic was still retrying at 40 s)."""
    host = f"127.0.0.1:{free_port()}"
    app = fail_fast_app(PUBSUB_EMULATOR_HOST=host)
    topic = f"projects/{TEST_PROJECT}/topics/orders"
    subscription = f"projects/{TEST_PROJECT}/subscriptions/orders"
    calls = {
        "get_topic": lambda: cloudclients.get_publisher().get_topic(topic=topic),
        "pull": lambda: cloudclients.get_subscriber().pull(subscription=subscription, max_messages=1),
        "acknowledge": lambda: cloudclients.get_subscriber().acknowledge(subscription=subscription, ack_ids=["a"]),
        "create_subscription": lambda: cloudclients.get_subscriber().create_subscription(name=subscription,
                                                                                         topic=topic),
    }

    def in_app() -> Any:
        with app.app_context():
            return calls[call]()

    error, seconds = raised_within(10.0, in_app)  # the library's default retry runs for 60 s
    print(f"\n{call} against a stopped Pub/Sub emulator: error after {seconds:.2f} s")
    assert type(error).__name__ == "EmulatorUnreachableError" and type(error).__module__ == "cloudclients"
    assert str(error) == f"Pub/Sub emulator at {host} not reachable — is it running?"
    assert isinstance(error, GoogleAPICallError)  # what code catching API errors already catches


def test_the_cli_against_a_stopped_emulator_says_so_at_once(fail_fast_app: MakeApp) -> None:
    """`flask cloudclients create-topic` against a stopped emulator: exit 1 with "is it running?"
    at once (it retried for the library's 600 s create_topic deadline)."""
    host = f"127.0.0.1:{free_port()}"
    app = fail_fast_app(PUBSUB_EMULATOR_HOST=host)

    def create_topic() -> None:
        result = app.test_cli_runner().invoke(args=["cloudclients", "create-topic", "orders"])
        raise SystemExit(result.exit_code, result.output)

    error, _ = raised_within(10.0, create_topic)
    assert isinstance(error, SystemExit) and error.args[0] == 1
    assert f"Pub/Sub emulator at {host} not reachable — is it running?" in error.args[1]


def raised_within(seconds: float, call: Any) -> tuple[BaseException, float]:
    """What *call* raised, and when; fails the test if it is still running after *seconds*
    (run on a daemon thread, so that a call that retries for minutes cannot hold the suite)."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running (retrying?) after {seconds} s")
    assert outcome, "the call did not fail"
    return outcome[0], time.monotonic() - started


@pytest.mark.slow
def test_an_unreachable_pubsub_answers_inside_gunicorns_timeout(
    black_hole: BlackHole, cloudclients_env: dict[str, str]
) -> None:
    """Pub/Sub accepts connections but never answers: with the default settings a sync gunicorn
    worker answers 503 in about 12 s (publish timeout 10 s + grace), well before gunicorn's
    default 30 s --timeout would SIGKILL it."""
    env = {**cloudclients_env, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{black_hole.port}"}
    with gunicorn(["-w", "1", "-k", "sync"], env) as server:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{server.url}/track?topic=orders", data=b"x", method="POST")
        started = time.monotonic()
        try:
            urllib.request.urlopen(request, timeout=60)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        seconds = time.monotonic() - started
        log = server.log()
    print(f"\nunreachable Pub/Sub under gunicorn: {status} after {seconds:.1f} s")
    assert status == 503, log[-2000:]
    assert seconds < 15.0
    assert "WORKER TIMEOUT" not in log


def test_a_stopped_storage_emulator_is_reported_at_once(fail_fast_app: MakeApp) -> None:
    """Nothing listens at the Storage emulator's URL: the call raises StorageUnavailableError saying
    so at once, instead of retrying for two minutes."""
    url = f"http://127.0.0.1:{free_port()}"
    app = fail_fast_app(STORAGE_EMULATOR_HOST=url, PUBSUB_EMULATOR_HOST="127.0.0.1:9")
    with app.app_context():
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError, match=f"emulator at {url} not reachable .* is it running"):
            get_storage().bucket("receipts").blob("r-1").download_as_bytes()
        seconds = time.monotonic() - started
    print(f"\nstopped Storage emulator: error after {seconds:.2f} s")
    assert seconds < 2.0


@pytest.mark.parametrize("path", ["/store", "/read"])
def test_a_hanging_storage_fails_within_the_storage_timeout(
    fail_fast_app: MakeApp, black_hole: BlackHole, path: str
) -> None:
    """Storage accepts connections and never answers: uploads and downloads fail within about 1-1.5x
    CLOUDCLIENTS_STORAGE_TIMEOUT (here 2 s) — not after the library's 60 s per request and 120 s
    of retries."""
    app = fail_fast_app(STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{black_hole.port}", PUBSUB_EMULATOR_HOST="127.0.0.1:9",
                   STORAGE_TIMEOUT=2)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response, seconds = timed(lambda: app.test_client().open(path, method="POST" if path == "/store" else "GET"))
    print(f"\nhanging Storage {path}: {response.status_code} after {seconds:.1f} s")
    assert response.status_code == 500
    assert seconds < 6.0


def test_a_failing_storage_is_retried_only_within_the_storage_timeout(fail_fast_app: MakeApp) -> None:
    """Storage answers 503 to everything: the library's retries stop once the failures have lasted
    CLOUDCLIENTS_STORAGE_TIMEOUT (2 s here), with StorageUnavailableError."""
    hits: list[float] = []

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def _fail(self) -> None:
            hits.append(time.monotonic())
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _fail  # noqa: N815 - http.server's naming

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        app = fail_fast_app(STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{server.server_address[1]}",
                       PUBSUB_EMULATOR_HOST="127.0.0.1:9", STORAGE_TIMEOUT=2)
        with app.app_context():
            started = time.monotonic()
            with pytest.raises(StorageUnavailableError, match="did not answer"):
                get_storage().bucket("receipts").blob("r-1").download_as_bytes()
            seconds = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    print(f"\nStorage answering 503: {len(hits)} attempts, gave up after {seconds:.1f} s")
    assert len(hits) >= 2  # it did retry
    assert seconds < 6.0
