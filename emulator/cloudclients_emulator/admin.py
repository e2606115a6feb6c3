"""The admin API (HTTP/1.1, JSON): reset, fault injection, breaking streams, stats.

It is unauthenticated: the emulator warns when it listens beyond loopback.
Every input is validated; a bad one gets 400 with the reason.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import Code
from .http11 import Response
from .service import Service

__all__ = ["Admin"]

MAX_ADMIN_BODY = 64 * 1024

_ENDPOINTS = {
    "/admin/reset": ("POST",),
    "/admin/faults": ("GET", "POST", "DELETE"),
    "/admin/break-streams": ("POST",),
    "/admin/stats": ("GET",),
}


class BadRequestError(ValueError):
    """An admin request the emulator refuses (400), with the reason."""


def _json(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj).encode())


def _body(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_ADMIN_BODY:
        raise BadRequestError(f"the body is larger than {MAX_ADMIN_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadRequestError("the body is nested too deeply") from None
    except ValueError as exc:
        raise BadRequestError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object")
    return body


def rss_bytes() -> int:
    """This process's resident set size (Linux; 0 elsewhere)."""
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Admin:
    """Handles ``/admin/*``."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def handle(self, method: str, path: str, raw: bytes) -> Response:
        allowed = _ENDPOINTS.get(path)
        if allowed is None:
            return _json(404, {"error": f"no admin endpoint {path}; there are {', '.join(_ENDPOINTS)}"})
        if method not in allowed:
            return Response(405, json.dumps({"error": f"{path} answers {', '.join(allowed)}, not {method}"}).encode(),
                            headers=[("allow", ", ".join(allowed))])
        try:
            return self._handle(method, path, _body(raw) if method in ("POST", "DELETE") else {})
        except BadRequestError as exc:
            return _json(400, {"error": str(exc)})

    def _handle(self, method: str, path: str, body: dict[str, Any]) -> Response:
        state, faults = self.service.state, self.service.faults
        if path == "/admin/reset":
            state.reset()
            faults.clear()
            return _json(200, {"ok": True})
        if path == "/admin/faults":
            if method == "GET":
                return _json(200, {"faults": faults.list()})
            if method == "DELETE":
                faults.clear()
                return _json(200, {"ok": True})
            try:
                fault = faults.add(body)
            except ValueError as exc:
                raise BadRequestError(str(exc)) from None
            return _json(200, {"ok": True, "fault": fault.as_json()})
        if path == "/admin/break-streams":
            unknown = sorted(set(body) - {"status"})
            if unknown:
                raise BadRequestError(f"unknown field {unknown[0]!r}; break-streams takes only 'status'")
            name = body.get("status", "UNAVAILABLE")
            if not isinstance(name, str) or name.upper() not in Code.__members__ or name.upper() == "OK":
                raise BadRequestError(f"'status' {name!r} is not a gRPC status code name other than OK "
                                 "(streams ended with OK stop a client's subscriber for good)")
            return _json(200, {"ok": True, "broken": state.break_streams(Code[name.upper()])})
        return _json(200, {**state.stats(), "rss_bytes": rss_bytes()})
