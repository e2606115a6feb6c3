"""One typed message for both receiving paths: push requests and streaming pull.

A handler written as ``def handle(message: ReceivedMessage) -> None`` works
behind :func:`~cloudclients.push_endpoint` and behind
:func:`~cloudclients.subscribe` alike: returning acknowledges, raising nacks.

No Google imports: a pulled ``google.cloud.pubsub_v1`` message is read by
attribute; push request bodies are read by ``_envelope``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

__all__ = ["ReceivedMessage", "from_pulled", "parse_time"]


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
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is in year 10000 in UTC
        raise ValueError("is out of range (before year 1 or after year 9999 in UTC)") from None
