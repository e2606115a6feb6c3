"""One typed message for both receiving paths: push requests and streaming pull.

A handler written as ``def handle(message: ReceivedMessage) -> None`` works
behind :func:`~cloudclients.push_endpoint` and behind
:func:`~cloudclients.subscribe` alike: returning acknowledges, raising nacks.

No Google imports: a pulled ``google.cloud.pubsub_v1`` message is read by
attribute, a push envelope is plain JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

__all__ = ["EnvelopeError", "ReceivedMessage", "from_pulled", "from_unwrapped", "parse_push_envelope", "parse_time"]


class EnvelopeError(ValueError):
    """A push request body is not a Pub/Sub push message.

    :ivar problems: one sentence per malformed or missing field. None quotes
        the body (it may carry application data).
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ReceivedMessage:
    """A Pub/Sub message as a handler sees it.

    :ivar data: the payload (``b""`` for attribute-only messages).
    :ivar attributes: read-only ``str → str`` mapping.
    :ivar message_id: the ID the service assigned at publish time (``""`` when a
        hand-made push request left it out).
    :ivar publish_time: when the service received it (aware, UTC); ``None`` when
        a hand-made push request left it out.
    :ivar ordering_key: ``""`` unless published with one.
    :ivar delivery_attempt: 1 on the first delivery, 2 on the second, …; ``None``
        when the service does not report it (only subscriptions with a
        dead-letter policy do).
    :ivar subscription: the full subscription name it was delivered through
        (``""`` when a push request does not say).
    :ivar claims: the verified push token's claims (``email``, ``sub``, ``aud``,
        …), or what a custom verifier returned; empty when nothing was verified
        (streaming pull, platform-authenticated or emulator pushes).
    """

    data: bytes
    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    message_id: str = ""
    publish_time: datetime | None = None
    ordering_key: str = ""
    delivery_attempt: int | None = None
    subscription: str = ""
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8.

        :raises UnicodeDecodeError: if it is not UTF-8.
        """
        return self.data.decode("utf-8")

    def json(self) -> Any:
        """The payload parsed as JSON.

        :raises ValueError: if it is not JSON.
        """
        return json.loads(self.data)

    def __repr__(self) -> str:
        # The payload is application data: its size, not its content, goes in reprs and logs.
        return (
            f"<ReceivedMessage id={self.message_id!r} bytes={len(self.data)} "
            f"attributes={sorted(self.attributes)} subscription={self.subscription!r}>"
        )


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
        raise EnvelopeError(["the body is not a JSON object with a 'message' field (is this a Pub/Sub push?)"])
    message = body.get("message")
    if not isinstance(message, Mapping):
        raise EnvelopeError(["'message' is missing or not an object"])
    problems: list[str] = []

    data = b""
    raw = message.get("data")
    if raw is not None:
        if not isinstance(raw, str):
            problems.append("'message.data' is not a base64 string")
        else:
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                problems.append("'message.data' is not valid base64")

    attributes: dict[str, str] = {}
    raw_attributes = message.get("attributes")
    if raw_attributes is not None:
        if not isinstance(raw_attributes, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_attributes.items()
        ):
            problems.append("'message.attributes' is not an object of string values")
        else:
            attributes = dict(raw_attributes)
    if raw is None and raw_attributes is None:
        problems.append("'message' has neither 'data' nor 'attributes'")

    message_id = _string(message, problems, "message.messageId", "messageId", "message_id")
    ordering_key = _string(message, problems, "message.orderingKey", "orderingKey", "ordering_key")
    subscription = _string(body, problems, "subscription", "subscription")
    publish_time: datetime | None = None
    raw_time = _first(message, "publishTime", "publish_time")
    if raw_time is not None:
        try:
            publish_time = parse_time(raw_time)
        except ValueError as exc:
            problems.append(f"'message.publishTime' {exc}")

    attempt = _first(body, "deliveryAttempt", "delivery_attempt")
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0):
        problems.append("'deliveryAttempt' is not a non-negative integer")
        attempt = None

    if problems:
        raise EnvelopeError(problems)
    return ReceivedMessage(
        data=data,
        attributes=MappingProxyType(attributes),
        message_id=message_id,
        publish_time=publish_time,
        ordering_key=ordering_key,
        delivery_attempt=attempt or None,
        subscription=subscription,
    )


#: The metadata headers of an unwrapped push (``no_wrapper`` with ``write_metadata``).
UNWRAPPED_METADATA_PREFIX = "x-goog-pubsub-"

# Headers that HTTP, proxies and the push service itself add: never message
# attributes. (An attribute named like one of these cannot be told apart from
# it; such apps read flask.request.headers themselves.)
_TRANSPORT_HEADERS = frozenset({
    "accept", "accept-encoding", "authorization", "connection", "content-length", "content-type", "expect",
    "forwarded", "from", "host", "keep-alive", "te", "traceparent", "tracestate", "transfer-encoding",
    "user-agent", "via", "x-cloud-trace-context", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
})


def from_unwrapped(body: bytes, headers: Iterable[tuple[str, str]]) -> ReceivedMessage:
    """Return the message of an *unwrapped* push (a subscription with ``no_wrapper``).

    The body is the message data itself. With ``write_metadata``, the service
    adds ``x-goog-pubsub-subscription-name``, ``-message-id``, ``-publish-time``
    and ``-ordering-key`` headers, and one header per attribute; the
    attributes are every header that is neither one of those nor a standard
    transport header.

    :raises EnvelopeError: for a malformed ``x-goog-pubsub-publish-time``.
    """
    metadata: dict[str, str] = {}
    attributes: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(UNWRAPPED_METADATA_PREFIX):
            metadata[lower.removeprefix(UNWRAPPED_METADATA_PREFIX)] = value
        elif lower not in _TRANSPORT_HEADERS:
            attributes[name] = value
    publish_time = None
    if "publish-time" in metadata:
        try:
            publish_time = parse_time(metadata["publish-time"])
        except ValueError as exc:
            raise EnvelopeError([f"header 'x-goog-pubsub-publish-time' {exc}"]) from None
    return ReceivedMessage(
        data=body,
        attributes=MappingProxyType(attributes),
        message_id=metadata.get("message-id", ""),
        publish_time=publish_time,
        ordering_key=metadata.get("ordering-key", ""),
        subscription=metadata.get("subscription-name", ""),
    )


def from_pulled(message: Any, subscription: str) -> ReceivedMessage:
    """Return a :class:`ReceivedMessage` for a streaming-pull ``Message``."""
    published = message.publish_time  # a datetime from the protobuf Timestamp
    if published.tzinfo is None:
        published = published.replace(tzinfo=UTC)
    return ReceivedMessage(
        data=bytes(message.data),
        attributes=MappingProxyType(dict(message.attributes)),
        message_id=str(message.message_id),
        publish_time=published,
        ordering_key=str(message.ordering_key or ""),
        delivery_attempt=message.delivery_attempt or None,
        subscription=subscription,
    )


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return None


def _string(mapping: Mapping[str, Any], problems: list[str], label: str, *keys: str) -> str:
    value = _first(mapping, *keys)
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(f"'{label}' is not a string")
        return ""
    return value


def parse_time(value: Any) -> datetime:
    """An RFC 3339 timestamp (up to nanoseconds, ``Z`` or an offset) as an aware UTC datetime.

    :raises ValueError: saying what is wrong with it (never quoting it).
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("is not a string")
    text = value.strip()
    # RFC 3339 with up to nanoseconds and a Z: fromisoformat takes at most microseconds.
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("is not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError("has no time zone")
    return parsed.astimezone(UTC)
