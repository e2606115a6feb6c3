"""Core conformance targets: our emulator always, Google's official one when installed.

One emulator process per target for the whole session; every test makes its
own resources (unique names), through the real google-cloud-pubsub clients
(built by a cloudclients registry: explicit insecure channels, no environment).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from google.pubsub_v1.types import PublishRequest

from cloudclients import ClientRegistry, Settings
from cloudclients.testing import EmulatorNotInstalledError, EmulatorProcess, start_pubsub_emulator

PROJECT = "conformance-test"


@dataclass
class Target:
    """One emulator under test, with clients pointed at it."""

    kind: str
    emulator: EmulatorProcess
    registry: ClientRegistry

    @property
    def publisher(self) -> Any:
        return self.registry.publisher

    @property
    def subscriber(self) -> Any:
        return self.registry.subscriber

    def publish_batch(self, topic: str, messages: list[dict[str, Any]]) -> Any:
        """One Publish RPC with exactly these messages (no client-side batching)."""
        return self.publisher.transport.publish(PublishRequest(topic=topic, messages=messages), timeout=10)

    def name(self, collection: str) -> str:
        return f"projects/{PROJECT}/{collection}/c-{uuid.uuid4().hex[:12]}"

    def topic(self) -> str:
        name = self.name("topics")
        self.publisher.create_topic(name=name)
        return name

    def subscription(self, topic: str, **fields: Any) -> str:
        name = self.name("subscriptions")
        self.subscriber.create_subscription(request={"name": name, "topic": topic, **fields})
        return name

    def rest(self, method: str, path: str, body: bytes | dict[str, Any] | None = None) -> tuple[int, Any]:
        """Call the Pub/Sub REST API (``/v1/<path>``); answer (HTTP status, decoded JSON body)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(f"http://{self.emulator.host}/v1/{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call our emulator's admin API."""
        req = urllib.request.Request(f"http://{self.emulator.host}{path}", method=method,
                                     data=json.dumps(body or {}).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="session", params=["cloudclients", "official"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    kind = request.param
    try:
        emulator = start_pubsub_emulator(kind, project=PROJECT)
    except EmulatorNotInstalledError as exc:
        if kind == "cloudclients":  # part of this repository: must be there
            raise
        pytest.skip(f"official emulator not installed: {exc}")
    settings = Settings.from_mapping(
        {"CLOUDCLIENTS_PROJECT": PROJECT, "CLOUDCLIENTS_PUBSUB_EMULATOR_HOST": emulator.host,
         "CLOUDCLIENTS_PUBLISH_TIMEOUT": 10}, {}
    )
    registry = ClientRegistry.from_settings(settings, name=f"conformance-{kind}")
    try:
        yield Target(kind, emulator, registry)
    finally:
        registry.close(timeout=5)
        emulator.stop()


def xfail_official(request: pytest.FixtureRequest, target: Target, reason: str, strict: bool = True) -> None:
    """Expect this test to fail on the official emulator (a known gap, with its reason)."""
    if target.kind == "official":
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=strict))


@contextlib.contextmanager
def push_endpoint(on_post: Callable[[str, dict[str, str], bytes], None], *,
                  idle_timeout: float | None = None) -> Iterator[str]:
    """An HTTP endpoint on 127.0.0.1 (its URL, path ``/push``) that hands every POST -- path, headers with
    lower-cased names, body -- to *on_post* and answers 204. With *idle_timeout*, it keeps HTTP/1.1
    connections alive and closes one idle that long (as gunicorn or Node do); otherwise one request per
    connection (HTTP/1.0)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if idle_timeout is not None else "HTTP/1.0"
        timeout = idle_timeout

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            on_post(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/push"
    finally:
        server.shutdown()
        server.server_close()
