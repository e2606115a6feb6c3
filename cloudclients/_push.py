"""Receive Pub/Sub push requests in a Flask view: authentication, then the message.

::

    @app.post("/pubsub/orders")
    @push_endpoint
    def orders(message: ReceivedMessage) -> None:
        handle(message.json())            # return → 204 → the service acks

Pub/Sub acknowledges a push on 102, 200, 201, 202 or 204 and retries on
anything else (with backoff), so: the view returning acks; raising (Flask
answers 500) or answering with another status nacks.

Authentication: the endpoint's ``verify=`` callable when given, then its
``auth=`` (or ``audience=``), else ``CLOUDCLIENTS_PUSH_AUTH`` (``oidc`` by default
when an audience is configured) — a ``verify=`` alone replaces the token check,
``verify=`` with ``auth=``/``audience=`` runs both, the callable first:

``oidc``
    ``Authorization: Bearer <Google ID token>`` is required and verified
    (signature, expiry, issuer, audience, and the service account when one is
    configured). No token → 401, an invalid one → 401, a valid token for
    another audience or account → 403. Its claims reach the view as
    ``message.claims``.
``oidc_or_emulator``
    The same, except that while a Pub/Sub emulator is configured a push
    without a token passes (an emulator may not sign pushes). One setting for
    local runs and production. A token that is present is verified when an
    audience is known (the app's or the endpoint's); in emulator mode with no
    audience there is nothing to check it against and it is not checked
    (``init_app`` warns).
``platform``
    The platform in front (Cloud Run with ``--no-allow-unauthenticated``, IAP,
    an API gateway) already authenticated the request; nothing is checked here
    (logged once at WARNING at ``init_app``).
``unauthenticated``
    Nothing is checked; accepted only with a Pub/Sub emulator configured.
``verify=callable``
    ``verify(flask.request)`` runs before the body is read (say, a shared
    token in the query string): ``True`` or a mapping accepts (a mapping
    becomes ``message.claims``, unless a verified token's claims replace it);
    ``False`` or ``None`` answers 403; a response (``("Invalid request", 400)``,
    a ``Response``, a ``str``) is the answer, as from a ``before_request``
    hook; an ``HTTPException`` it raises (``abort(403)``) is the answer.
    Anything else answers 403 and is logged at ERROR.

An endpoint whose configuration can never accept a push (no mode and no
audience) answers 500 — refusing is the only safe default for a public URL,
and a 5xx keeps the messages in the subscription until the app is fixed. Such
endpoints, and the decorator-order mistake (``@push_endpoint`` above
``@app.route``), are found before pushes arrive: ``init_app`` refuses those
already registered, later ones are reported in each worker (``_push_audit``).

The body: a wrapped push envelope (every shape the service sends, and the
minimal ``{"message": {"data": …}}`` hand-made requests use; one 400 lists
every malformed field), or — ``unwrapped=True``, or automatically when the
``x-goog-pubsub-message-id`` header is present — an unwrapped push
(``no_wrapper``): the raw data, metadata and attributes in headers. Bodies
beyond what the service can send answer 413. Neither the token nor the message
data ever appears in a response or a log line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar, cast, overload

from flask import Request, Response, current_app, jsonify, make_response, request
from werkzeug.wrappers import Response as BaseResponse

from ._config import PUSH_AUTH_MODES, Settings
from ._envelope import UNWRAPPED_METADATA_PREFIX, EnvelopeError, from_unwrapped, parse_push_body
from ._message import ReceivedMessage
from ._oidc import CertsUnavailableError, TokenRejectedError
from ._parsers import InvalidValueError, email, word
from ._ratelimit import RateLimitedLog
from ._state import CloudClientsState, app_state

__all__ = ["ORIGINAL_MARK", "PUSH_AUTH_MODES", "WRAPPER_MARK", "Options", "Plan", "plan_for", "push_endpoint"]

log = logging.getLogger("cloudclients")
# Pushes that fail for the same reason come in floods (every retry of a backlog, garbage
# posted to a public URL): one line per endpoint and reason per interval, with the count
# of the rest.
_errors = RateLimitedLog(log)

#: ``verify(request)``: ``True`` or a mapping (``message.claims``) accepts; ``False``/``None`` → 403;
#: a response (``("Invalid request", 400)``) is the refusal.
Verifier = Callable[[Request], Any]

PushView = Callable[..., Any]
F = TypeVar("F", bound=PushView)

#: Largest wrapped push body: a 10 MB message (the service's limit, data and
#: attributes) grows by a third in base64, plus the envelope's JSON.
MAX_WRAPPED_BYTES = 14 * 1024 * 1024
#: Largest unwrapped push body: the data itself.
MAX_UNWRAPPED_BYTES = 10 * 1024 * 1024

WRAPPER_MARK = "_cloudclients_push"
ORIGINAL_MARK = "_cloudclients_push_wrapped_into"


@dataclass(frozen=True)
class Options:
    """What the decorator was given."""

    auth: str | None = None
    audience: str | None = None
    service_account: str | None = None
    verify: Verifier | None = None
    unwrapped: bool = False


@dataclass(frozen=True)
class Plan:
    """How one endpoint authenticates, resolved against the app's settings."""

    mode: str | None  # None: nothing can be accepted (see problem)
    audience: str | None = None
    service_account: str | None = None
    verify: Verifier | None = None
    problem: str | None = None


@overload
def push_endpoint(view: F) -> F: ...


@overload
def push_endpoint(
    view: None = None, *, auth: str | None = None, audience: str | None = None, service_account: str | None = None,
    verify: Verifier | None = None, unwrapped: bool = False,
) -> Callable[[F], F]: ...


def push_endpoint(
    view: F | None = None,
    *,
    auth: str | None = None,
    audience: str | None = None,
    service_account: str | None = None,
    verify: Verifier | None = None,
    unwrapped: bool = False,
) -> F | Callable[[F], F]:
    """Make *view* a Pub/Sub push endpoint: it is called as
    ``view(message, **url_values)`` with a :class:`~cloudclients.ReceivedMessage`.

    Use bare (``@push_endpoint``) or with per-endpoint overrides of the app's
    settings (``@push_endpoint(audience="https://…/push/orders")``). Put it
    *under* the route decorator. A configured decorator can be reused:
    ``shared_token = push_endpoint(verify=check_token)``, then ``@shared_token``.

    The view's return value is the response (``None`` → an empty 204). An
    exception propagates to Flask (500): the service nacks and retries.

    :param auth: one of ``oidc``, ``oidc_or_emulator``, ``platform``,
        ``unauthenticated``, instead of ``CLOUDCLIENTS_PUSH_AUTH``.
    :param audience: expected ``aud`` of the token, instead of
        ``CLOUDCLIENTS_PUSH_AUDIENCE`` (implies ``oidc`` unless *auth* says otherwise).
    :param service_account: expected ``email`` of the token, instead of
        ``CLOUDCLIENTS_PUSH_SERVICE_ACCOUNT``.
    :param verify: a custom check, ``verify(flask.request)``, run before the
        body is read: alone, it replaces token verification for this endpoint;
        with *auth* or *audience*, the token is verified after it passes (as
        App Engine's sample checks a shared token and the OIDC token).
    :param unwrapped: the subscription uses payload unwrapping (``no_wrapper``)
        without ``write_metadata`` (with it, unwrapped pushes are recognised
        by their headers anyway).
    :raises ValueError: for an unknown *auth*, or a malformed *audience* or
        *service_account*.
    :raises TypeError: if *verify* is not callable.
    """
    options = _check_options(auth, audience, service_account, verify, unwrapped)

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Response:
            state = app_state(what="@push_endpoint")
            rejected, claims = _authenticate(state, options)
            if rejected is not None:
                return rejected
            message = _read_message(state, options)
            if isinstance(message, Response):
                return message
            if claims:
                message = dataclasses.replace(message, claims=MappingProxyType(dict(claims)))
            result = func(message, *args, **kwargs)
            if result is None:
                return Response(status=204)
            return make_response(result)

        setattr(wrapper, WRAPPER_MARK, options)
        # Marks the original too, after functools.wraps copied its attributes:
        # the audit recognises it if a route serves it instead of the wrapper.
        with contextlib.suppress(AttributeError, TypeError):  # a builtin (list.append) takes no attributes
            setattr(func, ORIGINAL_MARK, wrapper)
        return cast(F, wrapper)

    if view is not None:
        return decorate(view)
    return decorate


def _check_options(
    auth: str | None, audience: str | None, service_account: str | None, verify: Verifier | None, unwrapped: bool
) -> Options:
    if auth is not None and auth not in PUSH_AUTH_MODES:
        raise ValueError(f"push_endpoint(auth={auth!r}) is not one of {', '.join(map(repr, PUSH_AUTH_MODES))}.")
    if verify is not None and not callable(verify):
        raise TypeError(f"push_endpoint(verify={verify!r}) is not callable. Fix: pass a function of the request.")
    try:
        audience = None if audience is None else word(audience)
        service_account = None if service_account is None else email(service_account)
    except InvalidValueError as exc:
        which = "audience" if audience is not None and service_account is None else "audience/service_account"
        raise ValueError(f"push_endpoint({which}=…) {exc.problem}.") from None
    if not isinstance(unwrapped, bool):
        raise TypeError(f"push_endpoint(unwrapped={unwrapped!r}) must be True or False.")
    return Options(auth, audience, service_account, verify, unwrapped)


# -- authentication ------------------------------------------------------------------


def plan_for(settings: Settings, options: Options) -> Plan:
    """How an endpoint with *options* authenticates in an app with *settings*."""
    if options.verify is not None and options.auth is None and options.audience is None:
        return Plan("custom", verify=options.verify)
    audience = options.audience or settings.push_audience
    account = options.service_account or settings.push_service_account
    mode = options.auth or ("oidc" if options.audience else settings.push_auth)
    if mode is None:
        return Plan(None, problem=(
            "push authentication is not configured. Fix: set CLOUDCLIENTS_PUSH_AUDIENCE to the push "
            "subscription's OIDC audience (CLOUDCLIENTS_PUSH_AUTH=oidc), or CLOUDCLIENTS_PUSH_AUTH to "
            "'oidc_or_emulator', 'platform' (behind Cloud Run IAM or IAP) or 'unauthenticated' (emulator only), "
            "or pass verify= to @push_endpoint"))
    if mode in ("oidc", "oidc_or_emulator") and audience is None:
        if mode == "oidc_or_emulator" and settings.pubsub_emulator:
            return Plan(mode)  # tokenless emulator pushes pass; a token could not be checked
        return Plan(None, problem=(
            f"push authentication {mode!r} needs an audience. Fix: set CLOUDCLIENTS_PUSH_AUDIENCE (usually the "
            "endpoint URL) or pass audience= to @push_endpoint"))
    if mode == "unauthenticated" and not settings.pubsub_emulator:
        return Plan(None, problem=(
            "auth='unauthenticated' is only allowed against the Pub/Sub emulator and none is configured. Fix: use "
            "'oidc_or_emulator', or 'platform' behind Cloud Run IAM or IAP"))
    return Plan(mode, audience=audience, service_account=account, verify=options.verify)


def _authenticate(state: CloudClientsState, options: Options) -> tuple[Response | None, Mapping[str, Any]]:
    """Return ``(error response or None, claims)``."""
    plan = plan_for(state.settings, options)
    if plan.mode is None:
        _errors.error(_key(state, "500"), "cloudclients: push to %s refused (500): %s.",
                      request.path, plan.problem)
        return _error(500, "push authentication not configured", plan.problem or ""), {}
    verified: Mapping[str, Any] = {}
    if plan.verify is not None:
        verdict = plan.verify(request)  # an HTTPException it raises is the answer
        refusal = _verdict_refusal(state, plan.verify, verdict)
        if refusal is not None:
            return refusal, {}
        verified = verdict if isinstance(verdict, Mapping) else {}
        if plan.mode == "custom":
            return None, verified
    if plan.mode == "platform":
        return None, verified
    header = request.headers.get("Authorization", "")
    if not header:
        if plan.mode == "unauthenticated" or (plan.mode == "oidc_or_emulator" and state.settings.pubsub_emulator):
            return None, verified
        return _reject(TokenRejectedError(401, "no bearer token (Authorization header missing)")), {}
    if plan.audience is None:  # emulator modes without an audience: nothing to check a token against
        return None, verified
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _reject(TokenRejectedError(401, "the Authorization header is not 'Bearer <token>'")), {}
    try:
        claims = state.verifier.verify(token.strip(), audience=plan.audience, service_account=plan.service_account)
    except TokenRejectedError as exc:
        return _reject(exc), {}
    except CertsUnavailableError as exc:
        _errors.error(_key(state, "503"),
                      "cloudclients: push to %s not verified: %s; answering 503 so that Pub/Sub retries",
                      request.path, exc)
        return _error(503, "token verification unavailable", "the signing certificates could not be fetched"), {}
    return None, claims


def _verdict_refusal(state: CloudClientsState, verify: Verifier, verdict: Any) -> Response | None:
    """``None`` when *verdict* (what ``verify(request)`` returned) accepts the push, else the refusal.

    ``True`` or a mapping (claims) accepts; ``False`` or ``None`` refuses with
    403; a view-style value (a ``Response``, a ``(body, status)`` tuple, a
    ``str`` or ``bytes``) is the refusal itself, made into a response by the
    app as Flask does for a ``before_request`` hook — so Google's sample's
    ``return "Invalid request", 400`` works. Anything else refuses with 403
    and is logged, since the verifier's intent is unknown.
    """
    if verdict is True or isinstance(verdict, Mapping):
        return None
    if verdict is False or verdict is None:
        return _reject(TokenRejectedError(403, "the request was refused by the endpoint's verifier"))
    name = getattr(verify, "__qualname__", None) or type(verify).__name__
    if isinstance(verdict, (str, bytes, tuple, BaseResponse)):
        try:
            response = current_app.make_response(verdict)
        except (TypeError, ValueError):
            pass  # a malformed tuple: refused below, with the reason logged
        else:
            if response.status_code < 300:
                _errors.warning(_key(state, "verifier-2xx"),
                                "cloudclients: push to %s answered %d by verify=%s without running the view: "
                                "Pub/Sub acknowledges it, and the message is gone. Fix: return a 4xx to refuse "
                                "(as in return 'Invalid request', 400), or True to accept",
                                request.path, response.status_code, name)
            return response
    _errors.error(_key(state, f"verifier-{type(verdict).__name__}"),
                  "cloudclients: push to %s refused (403): verify=%s returned a %s, which is neither an answer nor "
                  "a refusal. Fix: return True or a mapping of claims to accept; False or None to refuse with 403; "
                  "or a response, such as ('Invalid request', 400), to refuse with it",
                  request.path, name, type(verdict).__name__)
    return _error(403, "forbidden", "the request was refused by the endpoint's verifier")


# -- the body -----------------------------------------------------------------------------


def _read_message(state: CloudClientsState, options: Options) -> ReceivedMessage | Response:
    unwrapped = options.unwrapped or f"{UNWRAPPED_METADATA_PREFIX}message-id" in request.headers
    limit = MAX_UNWRAPPED_BYTES if unwrapped else MAX_WRAPPED_BYTES
    if request.content_length is not None and request.content_length > limit:
        return _too_large(limit)
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        return _too_large(limit)
    try:
        if unwrapped:
            return from_unwrapped(body, request.headers.items())
        return parse_push_body(body)
    except EnvelopeError as exc:
        problems, unexpected = exc.problems, exc.unexpected[0] if exc.unexpected else None
    except Exception as exc:  # a safety net: a body must never turn into a 500 that Pub/Sub retries forever
        problems, unexpected = [f"the body could not be read as a push message ({type(exc).__name__})"], exc
    if unexpected is not None:
        _errors.warning(_key(state, "400-unexpected"), "cloudclients: push to %s refused (400): reading it raised "
                        "%s, a cloudclients bug: %s", request.path, type(unexpected).__name__, "; ".join(problems),
                        exc_info=unexpected)
    else:
        _errors.warning(_key(state, "400"), "cloudclients: push to %s refused (400): %s",
                        request.path, "; ".join(problems))
    detail = "; ".join(problems)
    response = _error(400, "malformed push envelope", detail)
    response.set_data(json.dumps({"error": "malformed push envelope", "detail": detail, "problems": problems}))
    return response


def _too_large(limit: int) -> Response:
    _errors.warning(_key(None, "413"), "cloudclients: push to %s refused (413): body over %d bytes",
                    request.path, limit)
    return _error(413, "push body too large", f"more than {limit} bytes; the service never sends that much")


# -- responses ---------------------------------------------------------------------------


def _reject(exc: TokenRejectedError) -> Response:
    _errors.warning(_key(None, f"{exc.status} {exc.reason}"), "cloudclients: push to %s rejected (%d): %s",
                    request.path, exc.status, exc.reason)
    response = _error(exc.status, "unauthorized" if exc.status == 401 else "forbidden", exc.reason)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def _key(state: CloudClientsState | None, what: str) -> str:
    # Per app, endpoint (not path: URL variables would make keys without end) and kind of failure.
    app = id(state) if state is not None else id(current_app._get_current_object())  # type: ignore[attr-defined]
    return f"{app} {request.endpoint} {what}"


def _error(status: int, error: str, detail: str) -> Response:
    response = jsonify(error=error, detail=detail)
    response.status_code = status
    return response
