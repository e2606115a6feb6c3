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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

__all__ = ["EnvelopeError", "ReceivedMessage", "from_pulled", "parse_push_envelope"]


class EnvelopeError(ValueError):
    """A push request body is not a Pub/Sub push envelope.

    The message says which field is wrong and never quotes the body (it may
    carry application data).
    """


@dataclass(frozen=True)
class ReceivedMessage:
    """A Pub/Sub message as a handler sees it.

    :ivar data: the payload (``b""`` for attribute-only messages).
    :ivar attributes: read-only ``str → str`` mapping.
    :ivar message_id: the ID the service assigned at publish time.
    :ivar publish_time: when the service received it (aware, UTC).
    :ivar ordering_key: ``""`` unless published with one.
    :ivar delivery_attempt: 1 on the first delivery, 2 on the second, …; ``None``
        when the service does not report it (only subscriptions with a
        dead-letter policy do).
    :ivar subscription: the full subscription name it was delivered through.
    """

    data: bytes
    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    message_id: str = ""
    publish_time: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))
    ordering_key: str = ""
    delivery_attempt: int | None = None
    subscription: str = ""

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

    Accepts the service's envelope (``message.data`` base64, ``attributes``,
    ``messageId``, ``publishTime``, ``orderingKey``, ``subscription``,
    ``deliveryAttempt``) and the snake_case aliases the service also sends.

    :raises EnvelopeError: naming the first missing or malformed field.
    """
    if not isinstance(body, Mapping):
        raise EnvelopeError("the body is not a JSON object with a 'message' field (is this a Pub/Sub push?)")
    message = body.get("message")
    if not isinstance(message, Mapping):
        raise EnvelopeError("'message' is missing or not an object")
    subscription = body.get("subscription")
    if not isinstance(subscription, str) or not subscription:
        raise EnvelopeError("'subscription' is missing or not a string")

    raw = message.get("data", "")
    if not isinstance(raw, str):
        raise EnvelopeError("'message.data' is not a base64 string")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("'message.data' is not valid base64") from None

    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise EnvelopeError("'message.attributes' is not an object of strings")

    message_id = _first(message, "messageId", "message_id")
    if not isinstance(message_id, str) or not message_id:
        raise EnvelopeError("'message.messageId' is missing or not a string")

    publish_time = _parse_time(_first(message, "publishTime", "publish_time"))

    ordering_key = _first(message, "orderingKey", "ordering_key") or ""
    if not isinstance(ordering_key, str):
        raise EnvelopeError("'message.orderingKey' is not a string")

    attempt = body.get("deliveryAttempt")
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0):
        raise EnvelopeError("'deliveryAttempt' is not a non-negative integer")

    return ReceivedMessage(
        data=data,
        attributes=MappingProxyType(dict(attributes)),
        message_id=message_id,
        publish_time=publish_time,
        ordering_key=ordering_key,
        delivery_attempt=attempt or None,
        subscription=subscription,
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


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise EnvelopeError("'message.publishTime' is missing or not a string")
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
        raise EnvelopeError("'message.publishTime' is not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise EnvelopeError("'message.publishTime' has no time zone")
    return parsed.astimezone(UTC)
