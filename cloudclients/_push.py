"""Receive Pub/Sub push requests in a Flask view: envelope parsing and OIDC checks.

::

    @app.post("/pubsub/orders")
    @push_endpoint
    def orders(message: ReceivedMessage) -> None:
        handle(message.json())            # return → 204 → the service acks

Pub/Sub acknowledges a push on 102, 200, 201, 202 or 204 and retries on
anything else (with backoff), so: the view returning acks; raising (Flask
answers 500) or answering with another status nacks.

Authentication (``Authorization: Bearer <Google ID token>``) is decided per
request from the app's settings:

* ``CLOUDCLIENTS_PUSH_AUDIENCE`` set (or ``audience=`` on the decorator): the
  token is required and verified (signature, expiry, issuer, audience, and the
  service account when ``CLOUDCLIENTS_PUSH_SERVICE_ACCOUNT`` is set). No
  token → 401, an invalid one → 401, a valid token for another audience or
  account → 403.
* ``CLOUDCLIENTS_PUSH_ALLOW_UNAUTHENTICATED=True`` (accepted by the config only
  together with a Pub/Sub emulator host): requests without a token pass, since
  the emulator cannot sign one. A token that is present is still verified when
  an audience is configured.
* neither: the endpoint answers 500 and logs how to configure it — refusing
  is the only safe default for a public URL, and a 5xx keeps the messages in
  the subscription until the app is fixed.

A body that is not a push envelope → 400 with a JSON body naming the field.
Neither the token nor the message data ever appears in a response or a log line.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from flask import Response, jsonify, make_response, request

from ._message import EnvelopeError, parse_push_envelope
from ._oidc import CertsUnavailableError, TokenRejectedError
from ._state import app_state

__all__ = ["push_endpoint"]

log = logging.getLogger("cloudclients")

PushView = Callable[..., Any]
F = TypeVar("F", bound=PushView)


@overload
def push_endpoint(view: F) -> F: ...


@overload
def push_endpoint(
    view: None = None, *, audience: str | None = None, service_account: str | None = None
) -> Callable[[F], F]: ...


def push_endpoint(
    view: F | None = None, *, audience: str | None = None, service_account: str | None = None
) -> F | Callable[[F], F]:
    """Make *view* a Pub/Sub push endpoint: it is called as
    ``view(message, **url_values)`` with a :class:`~cloudclients.ReceivedMessage`.

    Use bare (``@push_endpoint``) or with per-endpoint overrides of the app's
    settings (``@push_endpoint(audience="https://…/push/orders")``). Put it
    *under* the route decorator.

    The view's return value is the response (``None`` → an empty 204). An
    exception propagates to Flask (500): the service nacks and retries.

    :param audience: expected ``aud`` of the token, instead of
        ``CLOUDCLIENTS_PUSH_AUDIENCE``.
    :param service_account: expected ``email`` of the token, instead of
        ``CLOUDCLIENTS_PUSH_SERVICE_ACCOUNT``.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Response:
            rejected = _authenticate(audience, service_account)
            if rejected is not None:
                return rejected
            body = request.get_json(silent=True, force=True)
            try:
                message = parse_push_envelope(body)
            except EnvelopeError as exc:
                log.warning("cloudclients: push to %s refused (400): %s", request.path, exc)
                return _error(400, "malformed push envelope", str(exc))
            result = func(message, *args, **kwargs)
            if result is None:
                return Response(status=204)
            return make_response(result)

        return cast(F, wrapper)

    if view is not None:
        return decorate(view)
    return decorate


def _authenticate(audience: str | None, service_account: str | None) -> Response | None:
    """Return an error response, or ``None`` when the request may proceed."""
    state = app_state(what="@push_endpoint")
    settings = state.settings
    audience = audience or settings.push_audience
    account = service_account or settings.push_service_account
    header = request.headers.get("Authorization", "")

    if not header:
        if settings.push_allow_unauthenticated:
            return None
        if audience is None:
            return _not_configured()
        return _reject(TokenRejectedError(401, "no bearer token (Authorization header missing)"))
    if audience is None:
        if settings.push_allow_unauthenticated:
            # Emulator mode without an audience: nothing to check the token against.
            return None
        return _not_configured()
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _reject(TokenRejectedError(401, "the Authorization header is not 'Bearer <token>'"))
    try:
        state.verifier.verify(token.strip(), audience=audience, service_account=account)
    except TokenRejectedError as exc:
        return _reject(exc)
    except CertsUnavailableError as exc:
        log.error("cloudclients: push to %s not verified: %s; answering 503 so that Pub/Sub retries",
                  request.path, exc)
        return _error(503, "token verification unavailable", "the signing certificates could not be fetched")
    return None


def _reject(exc: TokenRejectedError) -> Response:
    log.warning("cloudclients: push to %s rejected (%d): %s", request.path, exc.status, exc.reason)
    response = _error(exc.status, "unauthorized" if exc.status == 401 else "forbidden", exc.reason)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def _not_configured() -> Response:
    log.error(
        "cloudclients: push to %s refused (500): push authentication is not configured. Fix: set "
        "CLOUDCLIENTS_PUSH_AUDIENCE to the push subscription's OIDC audience (and "
        "CLOUDCLIENTS_PUSH_SERVICE_ACCOUNT to its service account), or, against the emulator only, "
        "CLOUDCLIENTS_PUSH_ALLOW_UNAUTHENTICATED=True.", request.path,
    )
    return _error(500, "push authentication not configured",
                  "set CLOUDCLIENTS_PUSH_AUDIENCE (see the server log)")


def _error(status: int, error: str, detail: str) -> Response:
    response = jsonify(error=error, detail=detail)
    response.status_code = status
    return response

