"""Push request bodies → :class:`~cloudclients.ReceivedMessage`: the wrapped JSON envelope and
unwrapped pushes (payload unwrapping, ``no_wrapper``).

A body that is not a push message raises :class:`EnvelopeError` listing every
problem at once, each naming the field and never quoting the body (it may carry
application data). Nothing in here lets an exception other than
``EnvelopeError`` escape for a body the service could not have sent: each field
is read under a guard, so a parser surprise is a 400 naming the field, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

from ._message import ReceivedMessage, parse_time

__all__ = [
    "UNWRAPPED_METADATA_PREFIX",
    "UNWRAP_HINT",
    "EnvelopeError",
    "from_unwrapped",
    "parse_push_body",
    "parse_push_envelope",
]

T = TypeVar("T")

#: What to do when a push arrives unwrapped at an endpoint that expects the envelope.
UNWRAP_HINT = ("If the subscription uses payload unwrapping (no_wrapper), disable payload unwrapping on the "
               "subscription, or pass unwrapped=True to @push_endpoint")

#: The delivery attempt is an int32 in the service's API.
_MAX_ATTEMPT = 2**31 - 1
#: Digits an integer in an envelope may have: a deliveryAttempt has at most 10. Longer integers are
#: not converted at all (Python refuses beyond 4,300 digits, with an error that is not about JSON).
_MAX_INT_DIGITS = 32


class EnvelopeError(ValueError):
    """A push request body is not a Pub/Sub push message.

    :ivar problems: one sentence per malformed or missing field. None quotes
        the body (it may carry application data).
    :ivar unexpected: exceptions a field's parser raised that it should not
        have (logged with their traceback; the push still gets its 400).
    """

    def __init__(self, problems: list[str], unexpected: list[BaseException] | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.unexpected = unexpected or []


class _TooLong:
    """An integer literal with more digits than any envelope field can have."""


_TOO_LONG = _TooLong()


def _int(literal: str) -> int | _TooLong:
    return int(literal) if len(literal) <= _MAX_INT_DIGITS else _TOO_LONG


def parse_push_body(body: bytes) -> ReceivedMessage:
    """Return the message of a wrapped push request's raw *body*.

    :raises EnvelopeError: for an empty body, one that is not UTF-8 or not JSON
        (saying which), or an envelope with malformed fields (listing them all).
    """
    if not body.strip():
        raise EnvelopeError(["the body is empty (is this a Pub/Sub push?)"])
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EnvelopeError([f"the body is not UTF-8 text, so it is not a push envelope (JSON). {UNWRAP_HINT}"]) \
            from None
    try:
        parsed = json.loads(text, parse_int=_int)
    except RecursionError:
        raise EnvelopeError(["the body's JSON is nested too deeply to be a push envelope"]) from None
    except json.JSONDecodeError:
        raise EnvelopeError([f"the body is not JSON. {UNWRAP_HINT}"]) from None
    return parse_push_envelope(parsed)


class _Reader:
    """Reads one field at a time, collecting problems; a parser's surprise becomes a problem too."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.unexpected: list[BaseException] = []

    def field(self, label: str, read: Callable[[], T], default: T) -> T:
        try:
            return read()
        except _FieldError as problem:
            self.problems.append(f"'{label}' {problem}")
        except Exception as exc:  # a body the service never sends tripped a parser: 400, never 500
            self.problems.append(f"'{label}' could not be read ({type(exc).__name__})")
            self.unexpected.append(exc)
        return default

    def finish(self) -> None:
        if self.problems:
            raise EnvelopeError(self.problems, self.unexpected)


class _FieldError(Exception):
    """What is wrong with one field (completes "'field' …")."""


def parse_push_envelope(body: Any) -> ReceivedMessage:
    """Return the message carried by a push request's parsed JSON *body*.

    Accepts every shape the service sends (``message.data`` base64,
    ``attributes``, ``messageId``, ``publishTime``, ``orderingKey``, their
    snake_case aliases, ``subscription``, ``deliveryAttempt``) and the minimal
    ones hand-made requests use: only ``message`` is required, an object with
    ``data`` and/or ``attributes``; what is missing becomes an empty value.

    :raises EnvelopeError: listing every missing or malformed field at once.
    """
    if not isinstance(body, Mapping):
        raise EnvelopeError([f"the body is not a JSON object with a 'message' field. {UNWRAP_HINT}"])
    reader = _Reader()
    message = body.get("message")
    if message is None:
        reader.problems.append(f"'message' is {'null' if 'message' in body else 'missing'}. {UNWRAP_HINT}")
        message = {}
    elif not isinstance(message, Mapping):
        reader.problems.append("'message' is not an object")
        message = {}
    elif message.get("data") is None and message.get("attributes") is None:
        reader.problems.append("'message' has neither 'data' nor 'attributes'")

    data = reader.field("message.data", lambda: _data(message.get("data")), b"")
    no_attributes: dict[str, str] = {}
    attributes = reader.field("message.attributes", lambda: _attributes(message.get("attributes")), no_attributes)
    message_id = reader.field("message.messageId", lambda: _string(message, "messageId", "message_id"), "")
    ordering_key = reader.field("message.orderingKey", lambda: _string(message, "orderingKey", "ordering_key"), "")
    publish_time = reader.field("message.publishTime", lambda: _time(message), None)
    subscription = reader.field("subscription", lambda: _string(body, "subscription"), "")
    attempt = reader.field("deliveryAttempt", lambda: _attempt(body), None)
    reader.finish()
    return ReceivedMessage(
        data=data,
        attributes=MappingProxyType(attributes),
        message_id=message_id,
        publish_time=publish_time,
        ordering_key=ordering_key,
        delivery_attempt=attempt or None,
        subscription=subscription,
    )


def _data(raw: Any) -> bytes:
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise _FieldError("is not a base64 string")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise _FieldError("is not valid base64") from None


def _attributes(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise _FieldError("is not an object of string values")
    return dict(raw)


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return None


def _string(mapping: Mapping[str, Any], *keys: str) -> str:
    value = _first(mapping, *keys)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _FieldError("is not a string")
    return value


def _time(message: Mapping[str, Any]) -> datetime | None:
    raw = _first(message, "publishTime", "publish_time")
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise _FieldError(str(exc)) from None


def _attempt(body: Mapping[str, Any]) -> int | None:
    attempt = _first(body, "deliveryAttempt", "delivery_attempt")
    if attempt is None:
        return None
    if isinstance(attempt, _TooLong) or (isinstance(attempt, int) and not isinstance(attempt, bool)
                                         and not 0 <= attempt <= _MAX_ATTEMPT):
        raise _FieldError(f"is not an integer in range (0 to {_MAX_ATTEMPT})")
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise _FieldError("is not an integer")
    return attempt


#: The metadata headers of an unwrapped push (``no_wrapper`` with ``write_metadata``).
UNWRAPPED_METADATA_PREFIX = "x-goog-pubsub-"
_METADATA = frozenset({"message-id", "publish-time", "subscription-name", "ordering-key"})

# Headers the service's attributes cannot be told apart from, and so are never taken as
# attributes: HTTP's own (hop-by-hop, framing, content negotiation), those the push
# service sets itself (Authorization, User-Agent, Content-Type), and those proxies and
# platforms in front of the app add (App Engine, Cloud Run, load balancers, tracing).
# The service writes each attribute as a header of its own name next to its
# x-goog-pubsub-* metadata headers (Google's "payload unwrapping" page; the emulator's
# push.request_for does the same).
_NOT_ATTRIBUTES = frozenset({
    "authorization", "cache-control", "connection", "cookie", "dnt", "expect", "forwarded", "from", "host",
    "keep-alive", "origin", "pragma", "priority", "proxy-authorization", "proxy-connection", "referer", "te",
    "trailer", "transfer-encoding", "upgrade", "upgrade-insecure-requests", "user-agent", "via",
    "traceparent", "tracestate", "b3", "x-cloud-trace-context", "x-real-ip", "x-request-id", "x-correlation-id",
    "x-amzn-trace-id", "x-client-data", "x-original-url", "x-original-forwarded-for", "x-envoy-external-address",
})
_NOT_ATTRIBUTE_PREFIXES = ("accept", "content-", "if-", "sec-", "x-forwarded-", "x-appengine-", "x-goog-",
                           "x-cloud-", "x-b3-", "x-envoy-", "cf-")


def _is_attribute(lower: str) -> bool:
    return lower not in _NOT_ATTRIBUTES and not lower.startswith(_NOT_ATTRIBUTE_PREFIXES)


def from_unwrapped(body: bytes, headers: Iterable[tuple[str, str]]) -> ReceivedMessage:
    """Return the message of an *unwrapped* push (a subscription with ``no_wrapper``).

    The body is the message data itself. With ``write_metadata``, the service
    adds ``x-goog-pubsub-subscription-name``, ``-message-id``, ``-publish-time``
    and ``-ordering-key`` headers, and one header per attribute. HTTP header
    names are case-insensitive, so attribute names arrive **lowercased**; the
    headers of HTTP itself, of the push service and of proxies and platforms
    (``Content-*``, ``Accept*``, ``X-Forwarded-*``, ``X-AppEngine-*``, other
    ``X-Goog-*``, trace headers …) are never taken as attributes.

    :raises EnvelopeError: for a malformed ``x-goog-pubsub-publish-time``.
    """
    metadata: dict[str, str] = {}
    attributes: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(UNWRAPPED_METADATA_PREFIX):
            key = lower.removeprefix(UNWRAPPED_METADATA_PREFIX)
            if key in _METADATA:
                metadata[key] = value
        elif _is_attribute(lower):
            attributes.setdefault(lower, value)
    reader = _Reader()
    publish_time = reader.field(f"{UNWRAPPED_METADATA_PREFIX}publish-time",
                                lambda: _time({"publishTime": metadata.get("publish-time")}), None)
    reader.finish()
    return ReceivedMessage(
        data=body,
        attributes=MappingProxyType(attributes),
        message_id=metadata.get("message-id", ""),
        publish_time=publish_time,
        ordering_key=metadata.get("ordering-key", ""),
        subscription=metadata.get("subscription-name", ""),
    )
