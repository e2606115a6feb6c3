"""An optional health endpoint: can this worker reach Pub/Sub and Storage right now?

::

    app.register_blueprint(cloudclients.health_blueprint())      # GET /healthz

answers ``200`` when every check passes and ``503`` otherwise (load balancers
and Cloud Run / Kubernetes probes take a worker out of rotation on 5xx), with
a JSON body per check::

    {"status": "ok", "pid": 7, "checks": {
        "publisher": {"ok": true, "ms": 3.1, "error": null},
        "storage":   {"ok": false, "ms": 2000.4, "error": "TimeoutError: no answer within 2 s"}}}

Each check is one cheap request made by :meth:`ClientRegistry.ping` with
``CLOUDCLIENTS_HEALTH_TIMEOUT`` (default 2 s); all checks run at once, so the
endpoint answers within that timeout whatever the services do. Background
subscriptions of the app appear as ``background:<subscription>`` checks that
fail once their stream has ended with an error.

The body names exception types and their first message line (hosts, status
codes) — never credentials. Put the endpoint behind your ingress rules if even
that is too much for a public URL.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, jsonify

from ._registry import PingResult
from ._state import app_state

__all__ = ["health_blueprint", "health_report"]


def health_report(checks: Sequence[str] | None = None, timeout: float | None = None) -> tuple[bool, dict[str, Any]]:
    """Run the health checks of the current app; return ``(ok, report)``.

    :param checks: client names to check (default: every client with a ping).
    :param timeout: seconds for all checks (default: ``CLOUDCLIENTS_HEALTH_TIMEOUT``).
    :raises RuntimeError: outside an app context.
    """
    state = app_state(what="cloudclients.health_report()")
    results: dict[str, PingResult] = state.registry.ping(
        timeout=state.settings.health_timeout if timeout is None else timeout, names=checks
    )
    for sub in state.subscriptions:
        stats = sub.stats()
        results[f"background:{sub.subscription}"] = {"ok": stats["error"] is None, "ms": 0.0, "error": stats["error"]}
    ok = all(r["ok"] for r in results.values())
    return ok, {"status": "ok" if ok else "fail", "pid": os.getpid(), "checks": results}


def health_blueprint(
    path: str = "/healthz",
    *,
    checks: Sequence[str] | None = None,
    timeout: float | None = None,
    name: str = "cloudclients_health",
) -> Blueprint:
    """Return a blueprint serving ``GET path`` with :func:`health_report`: 200 or 503.

    :param checks: client names to check (default: every client with a ping,
        that is publisher, subscriber and storage).
    :param timeout: seconds for all checks (default: ``CLOUDCLIENTS_HEALTH_TIMEOUT``).
    :param name: the blueprint name (register two with different names to
        serve, say, a cheap liveness path with ``checks=()`` and a full one).
    """
    selected = None if checks is None else tuple(checks)
    blueprint = Blueprint(name, __name__)

    @blueprint.get(path)
    def health() -> tuple[Response, int]:
        ok, report = health_report(selected, timeout)
        response = jsonify(report)
        response.headers["Cache-Control"] = "no-store"
        return response, 200 if ok else 503

    return blueprint
