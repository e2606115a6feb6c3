"""HTTP/1.1 side of the port: readiness, the Pub/Sub v1 REST API, and the admin API.

The REST routes follow the ``google.api.http`` rules of google.pubsub.v1, so
google-cloud-pubsub's REST transport (which cloudclients uses in fork children
that cannot use gRPC) and plain ``curl`` work against the emulator. JSON is
converted with ``google.protobuf.json_format``; errors use Google's JSON error
shape.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
from google.protobuf import json_format

from .errors import ApiError, http_status
from .service import METHODS, Service

__all__ = ["Admin", "make_handler"]

log = logging.getLogger("cloudclients_emulator")

_SEG = r"[^/:]+"
_TOPIC = rf"projects/{_SEG}/topics/{_SEG}"
_SUB = rf"projects/{_SEG}/subscriptions/{_SEG}"
_SNAP = rf"projects/{_SEG}/snapshots/{_SEG}"
_PROJECT = rf"projects/{_SEG}"

# (HTTP method, resource pattern, suffix, RPC, request field the resource fills)
_ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
    (m, re.compile(rf"^/v1/(?P<p>{res}){re.escape(suffix)}$"), rpc, field)
    for m, res, suffix, rpc, field in [
        ("PUT", _TOPIC, "", "CreateTopic", "name"),
        ("GET", _TOPIC, "", "GetTopic", "topic"),
        ("PATCH", _TOPIC, "", "UpdateTopic", "topic.name"),
        ("DELETE", _TOPIC, "", "DeleteTopic", "topic"),
        ("POST", _TOPIC, ":publish", "Publish", "topic"),
        ("GET", _PROJECT, "/topics", "ListTopics", "project"),
        ("GET", _TOPIC, "/subscriptions", "ListTopicSubscriptions", "topic"),
        ("GET", _TOPIC, "/snapshots", "ListTopicSnapshots", "topic"),
        ("POST", _SUB, ":detach", "DetachSubscription", "subscription"),
        ("PUT", _SUB, "", "CreateSubscription", "name"),
        ("GET", _SUB, "", "GetSubscription", "subscription"),
        ("PATCH", _SUB, "", "UpdateSubscription", "subscription.name"),
        ("DELETE", _SUB, "", "DeleteSubscription", "subscription"),
        ("GET", _PROJECT, "/subscriptions", "ListSubscriptions", "project"),
        ("POST", _SUB, ":modifyAckDeadline", "ModifyAckDeadline", "subscription"),
        ("POST", _SUB, ":acknowledge", "Acknowledge", "subscription"),
        ("POST", _SUB, ":pull", "Pull", "subscription"),
        ("POST", _SUB, ":modifyPushConfig", "ModifyPushConfig", "subscription"),
        ("POST", _SUB, ":seek", "Seek", "subscription"),
        ("PUT", _SNAP, "", "CreateSnapshot", "name"),
        ("GET", _SNAP, "", "GetSnapshot", "snapshot"),
        ("PATCH", _SNAP, "", "UpdateSnapshot", "snapshot.name"),
        ("DELETE", _SNAP, "", "DeleteSnapshot", "snapshot"),
        ("GET", _PROJECT, "/snapshots", "ListSnapshots", "project"),
    ]
]
# Segments exclude ":", so a ":verb" path never matches a plain resource route.


class Admin:
    """The admin API: reset, faults, break streams, stats."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        state, faults = self.service.state, self.service.faults
        if (method, path) == ("POST", "/admin/reset"):
            state.reset()
            faults.clear()
            return 200, {"ok": True}
        if (method, path) == ("POST", "/admin/faults"):
            try:
                fault = faults.add(body)
            except (ValueError, TypeError) as exc:
                return 400, {"error": str(exc)}
            return 200, {"ok": True, "fault": fault.as_json()}
        if (method, path) == ("DELETE", "/admin/faults"):
            faults.clear()
            return 200, {"ok": True}
        if (method, path) == ("GET", "/admin/faults"):
            return 200, {"faults": faults.list()}
        if (method, path) == ("POST", "/admin/break-streams"):
            try:
                code = grpc.StatusCode[str(body.get("status", "UNAVAILABLE")).upper()]
            except KeyError:
                return 400, {"error": f"unknown status {body.get('status')!r}"}
            return 200, {"ok": True, "broken": state.break_streams(code)}
        if (method, path) == ("GET", "/admin/stats"):
            return 200, {**state.stats(), "rss_bytes": _rss()}
        return 404, {"error": f"no admin endpoint {method} {path}"}


def _rss() -> int:
    try:
        with open(f"/proc/{os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _set(message: Any, dotted: str, value: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        message = getattr(message, part)
    setattr(message, last, value)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloudclients-emulator"
    service: Service
    admin: Admin

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode())

    def _error(self, code: grpc.StatusCode, message: str) -> None:
        status = http_status(code)
        self._json(status, {"error": {"code": status, "message": message, "status": code.name}})

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        path = url.path
        if self.command in ("GET", "HEAD") and path == "/":
            self._send(200, b"Ok", "text/plain")
            return
        if path.startswith("/admin/"):
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                self._json(400, {"error": "body is not JSON"})
                return
            status, obj = self.admin.handle(self.command, path, body if isinstance(body, dict) else {})
            self._json(status, obj)
            return
        for method, pattern, rpc, field in _ROUTES:
            m = pattern.match(path)
            if m and method == self.command:
                self._rest(rpc, field, m.group("p"), raw, parse_qs(url.query))
                return
        self._error(grpc.StatusCode.NOT_FOUND, f"No route for {self.command} {path}")

    def _rest(self, rpc: str, field: str, name: str, raw: bytes, query: dict[str, list[str]]) -> None:
        _, request_type, _response_type = METHODS[rpc]
        request = request_type.pb()()
        try:
            if raw.strip():
                json_format.Parse(raw, request, ignore_unknown_fields=True)
            for key, values in query.items():
                snake = re.sub(r"([A-Z])", lambda c: "_" + c.group(1).lower(), key)
                if snake in ("page_size", "max_messages"):
                    setattr(request, snake, int(values[0]))
                elif snake == "page_token":
                    request.page_token = values[0]
            _set(request, field, name)
        except (json_format.ParseError, ValueError) as exc:
            self._error(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid JSON payload: {exc}")
            return
        try:
            response = self.service.call(rpc, request)
        except ApiError as exc:
            self._error(exc.code, exc.message)
            return
        self._send(200, json_format.MessageToJson(response, indent=None).encode())

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _dispatch  # noqa: N815


class _NoServer:
    """What BaseHTTPRequestHandler wants of a server: nothing, here."""


def make_handler(service: Service) -> Callable[[socket.socket, Any], None]:
    """Return ``handle(conn, addr)`` serving HTTP/1.1 on one accepted connection."""
    admin = Admin(service)
    handler = type("Handler", (_Handler,), {"service": service, "admin": admin})

    def handle(conn: socket.socket, addr: Any) -> None:
        try:
            handler(conn, addr, _NoServer())
        except (ConnectionError, TimeoutError):
            pass
        finally:
            conn.close()

    return handle

