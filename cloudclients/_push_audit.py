"""The push-endpoint audit: endpoints that can never accept a push, found before pushes arrive.

Pub/Sub retries a refused push for as long as the message lives, so an
endpoint whose configuration refuses everything (no authentication mode, an
OIDC mode without an audience, ``unauthenticated`` without an emulator) or a
route serving the undecorated view (``@push_endpoint`` above ``@app.route``)
must be found when the app starts, not when the backlog piles up.

When each endpoint is checked:

* ``init_app`` checks the endpoints already registered on the app and raises
  :class:`~cloudclients.ConfigError` listing every fatal finding;
* endpoints registered later (an app factory registering blueprints after
  ``init_app``) are checked in each process by ``gunicorn_post_worker_init`` /
  ``start_subscriptions()`` when they run, and on the first request the
  process serves; fatal findings are logged at ERROR (once per process and
  finding), and such endpoints answer 500 naming the fix;
* ``flask cloudclients status`` lists every fatal finding and exits with status 1.

Warnings (an endpoint that checks no token, a ``verify=`` that replaces the
app's OIDC check) are logged at WARNING once per process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

from ._config import Settings
from ._push import ORIGINAL_MARK, WRAPPER_MARK, Options, plan_for
from ._ratelimit import RateLimitedLog
from ._state import CloudClientsState, app_state

__all__ = ["Finding", "audit", "audit_push_endpoints", "report_push_endpoints"]

log = logging.getLogger("cloudclients")
# Every push to a misordered route is refused: one line per route every 10 s, then a count.
_refusals = RateLimitedLog(log)


@dataclass(frozen=True)
class Finding:
    """One thing the audit found about one endpoint."""

    endpoint: str
    #: A sentence naming the endpoint, what is wrong and the fix.
    message: str
    #: True: the endpoint can never accept a push.
    fatal: bool


def audit(app: Flask, settings: Settings, *, repair: bool = False) -> list[Finding]:
    """Check every push endpoint registered on *app* against *settings*.

    With *repair*, a route serving a view that ``@push_endpoint`` wrapped only
    after the route was registered is pointed at a view answering 500 with
    the fix (Flask would otherwise call the undecorated view, which fails
    with a ``TypeError``).
    """
    findings: list[Finding] = []
    for endpoint, view in list(app.view_functions.items()):
        options = getattr(view, WRAPPER_MARK, None)
        if isinstance(options, Options):
            findings += _check_endpoint(endpoint, options, settings)
        elif getattr(view, ORIGINAL_MARK, None) is not None:
            fix = (f"route {endpoint!r} serves the undecorated view: @push_endpoint is above @app.route. "
                   "Fix: put @push_endpoint under the route decorator.")
            findings.append(Finding(endpoint, fix, fatal=True))
            if repair:
                app.view_functions[endpoint] = _misordered(fix)
    return findings


def _check_endpoint(endpoint: str, options: Options, settings: Settings) -> list[Finding]:
    plan = plan_for(settings, options)
    if plan.mode is None:
        return [Finding(endpoint, f"push endpoint {endpoint!r} can never accept a push: {plan.problem}.", fatal=True)]
    if plan.mode == "platform" and options.auth == "platform":
        return [Finding(endpoint, f"push endpoint {endpoint!r} accepts requests without checking a token "
                                  "(auth='platform'): Cloud Run IAM or IAP must authenticate every request", False)]
    if plan.mode == "custom" and settings.push_auth in ("oidc", "oidc_or_emulator"):
        app_level = (f"CLOUDCLIENTS_PUSH_AUDIENCE={settings.push_audience!r}" if settings.push_audience
                     else f"CLOUDCLIENTS_PUSH_AUTH={settings.push_auth!r}")
        return [Finding(endpoint, (
            f"push endpoint {endpoint!r} checks only its verify= callable: the app's OIDC token check ({app_level}) "
            "does not apply to it. Fix: pass auth='oidc' to "
            "@push_endpoint as well to check both, or leave it if the verifier alone is intended"), False)]
    return []


def audit_push_endpoints(app: Flask, *, repair: bool = False) -> list[str]:
    """Return one line per push endpoint of *app* that can never accept a push,
    and per route that serves a view ``@push_endpoint`` wrapped *after* the
    route was registered (the decorators in the wrong order).

    Run by ``init_app`` (which raises), in each process (see
    :func:`report_push_endpoints`) and by ``flask cloudclients status``.
    """
    return [f.message for f in audit(app, app_state(app).settings, repair=repair) if f.fatal]


def report_push_endpoints(app: Flask, state: CloudClientsState) -> None:
    """Log, once per process and finding, what the audit finds on *app* now
    (ERROR for an endpoint that can never accept a push, WARNING otherwise),
    and repair misordered routes. Never raises: a request or a worker must not
    fail because of the audit."""
    try:
        for finding in audit(app, state.settings, repair=True):
            if not state.first_report(finding.message):
                continue
            log.log(logging.ERROR if finding.fatal else logging.WARNING, "cloudclients: %s", finding.message)
    except Exception:
        log.error("cloudclients: checking the push endpoints failed", exc_info=True)


def _misordered(fix: str) -> Callable[..., Response]:
    def misordered(*args: Any, **kwargs: Any) -> Response:
        _refusals.error(f"{id(current_app._get_current_object())} {request.endpoint}",  # type: ignore[attr-defined]
                        "cloudclients: push to %s refused (500): %s", request.path, fix)
        response = jsonify(error="push endpoint misconfigured", detail=fix)
        response.status_code = 500
        return response

    return misordered
