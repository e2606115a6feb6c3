"""Push delivery: POST each message to its push endpoint as the service does, with flow control.

The body is the service's JSON envelope, or with payload unwrapping
(``push_config.no_wrapper``) the message data itself, its metadata and
attributes in headers when ``write_metadata`` is set (:func:`request_for`).
With ``push_config.oidc_token`` every POST carries ``Authorization: Bearer``
and an ID token signed by the emulator's key (:mod:`.oidc`).

Each push subscription is a :class:`~.delivery.Consumer` with at most
:data:`PUSH_MAX_OUTSTANDING` POSTs in flight. A message is leased only when a
slot is free and is POSTed at once, so nothing waits in a queue while its
lease runs out; its lease lasts until the POST ends, which is bounded by the
ack deadline (the service's limit for a push answer). A 2xx (102, 200, 201,
202, 204 for the service) acknowledges; anything else, or no answer in time,
is a nack: the message comes back after the retry policy's backoff, or
exponential backoff from 100 ms to 10 s as the service does for push. A
message is never POSTed twice at once, and never again once acknowledged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
from typing import Any

import h11

from .delivery import Consumer, Lease
from .http11 import HttpClient
from .limits import MAX_RESPONSE_BYTES
from .oidc import TokenSigner
from .state import Sub, pb

__all__ = ["PUSH_MAX_OUTSTANDING", "PushDelivery", "envelope", "request_for"]

log = logging.getLogger("cloudclients_emulator")

PUSH_MAX_OUTSTANDING = 4
_ACK_STATUSES = frozenset((102, 200, 201, 202, 204))
_USER_AGENT = ("user-agent", "APIs-Google; cloudclients-emulator")
_HEADERS = [("content-type", "application/json"), _USER_AGENT]
# Attribute names that cannot become headers of an unwrapped push: the request's own, and those
# that change how HTTP frames it. Such attributes are left out, and so are names that are not HTTP
# tokens and values that are not printable ASCII without surrounding blanks (HTTP would mangle them).
_RESERVED = frozenset(("host", "content-length", "content-type", "transfer-encoding", "connection", "keep-alive",
                       "te", "trailer", "upgrade", "expect", "user-agent", "authorization"))
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")


def envelope(sub_name: str, message: Any, attempt: int | None) -> dict[str, Any]:
    """The JSON body the service POSTs for one message (a ``PubsubMessage``)."""
    publish_time = message.publish_time.ToJsonString()
    body: dict[str, Any] = {
        "data": base64.b64encode(message.data).decode(),
        "attributes": dict(message.attributes),
        "messageId": message.message_id,
        "message_id": message.message_id,
        "publishTime": publish_time,
        "publish_time": publish_time,
    }
    if message.ordering_key:
        body["orderingKey"] = message.ordering_key
    out: dict[str, Any] = {"message": body, "subscription": sub_name}
    if attempt is not None:
        out["deliveryAttempt"] = attempt
    return out


def _header_ok(name: str, value: str) -> bool:
    lower = name.lower()
    return (bool(_TOKEN.fullmatch(name)) and lower not in _RESERVED and not lower.startswith("x-goog-pubsub-")
            and bool(_FIELD_VALUE.fullmatch(value)) and value == value.strip())


def request_for(sub_name: str, message: Any, attempt: int | None, push_config: Any,
                signer: TokenSigner) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of the POST for one message, as the service sends them.

    Wrapped (the default): the JSON :func:`envelope`. Unwrapped
    (``no_wrapper``): the data as the body; with ``write_metadata``, the
    ``x-goog-pubsub-message-id``, ``-publish-time``, ``-subscription-name`` and
    (when set) ``-ordering-key`` headers, and each attribute as a header of its
    own name. With ``oidc_token``, ``Authorization: Bearer <ID token>``.
    """
    if push_config.HasField("no_wrapper"):
        body = bytes(message.data)
        headers = [("content-type", "application/octet-stream"), _USER_AGENT]
        if push_config.no_wrapper.write_metadata:
            headers += [("x-goog-pubsub-message-id", message.message_id),
                        ("x-goog-pubsub-publish-time", message.publish_time.ToJsonString()),
                        ("x-goog-pubsub-subscription-name", sub_name)]
            if message.ordering_key:
                headers.append(("x-goog-pubsub-ordering-key", message.ordering_key))
            skipped = [name for name, value in message.attributes.items() if not _header_ok(name, value)]
            headers += [(name, value) for name, value in message.attributes.items() if _header_ok(name, value)]
            if skipped:
                log.debug("unwrapped push for %s: %d attribute(s) cannot be headers and are left out",
                          sub_name, len(skipped))
    else:
        body = json.dumps(envelope(sub_name, message, attempt)).encode()
        headers = list(_HEADERS)
    if push_config.HasField("oidc_token"):
        token = push_config.oidc_token
        audience = token.audience or push_config.push_endpoint
        headers.append(("authorization", f"Bearer {signer.token(audience, token.service_account_email)}"))
    return body, headers


class _PushSub(Consumer):
    """Push for one subscription."""

    ack_deadline = math.inf  # leases end with the POST (which times out at the ack deadline)

    def __init__(self, owner: PushDelivery, sub: Sub) -> None:
        self.owner = owner
        self.sub = sub
        self.inflight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.active = True
        sub.delivery.want(self)

    def room(self) -> tuple[int, int]:
        return (PUSH_MAX_OUTSTANDING - self.inflight, MAX_RESPONSE_BYTES) if self.active else (0, 0)

    def deliver(self, leases: list[Lease]) -> None:
        loop = self.sub.delivery.loop
        for lease in leases:
            self.inflight += 1
            task = loop.create_task(self._push(lease))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        self._want()

    def _want(self) -> None:
        if self.active and self.inflight < PUSH_MAX_OUTSTANDING:
            self.sub.delivery.want(self)

    async def _push(self, lease: Lease) -> None:
        sub = self.sub
        endpoint = sub.pb.push_config.push_endpoint
        ok = False
        try:
            message = pb.PubsubMessage.FromString(lease.entry.msg.raw)
            attempt = lease.entry.attempts if sub.max_attempts() else None
            body, headers = request_for(sub.name, message, attempt, sub.pb.push_config, self.owner.signer)
            status = await self.owner.client.post(endpoint, body, headers, timeout=sub.ack_deadline)
            ok = status in _ACK_STATUSES
            if not ok:
                log.debug("push to %s: HTTP %d", endpoint, status)
        except (OSError, TimeoutError, h11.ProtocolError) as exc:
            log.debug("push to %s failed: %r", endpoint, exc)
        except Exception:  # never leave a message leased for ever
            log.exception("push to %s failed", endpoint)
        finally:
            self.inflight -= 1
        delivery = sub.delivery
        if delivery.leases.get(lease.ack_id) is lease:  # not ended meanwhile (seek, detach, delete)
            if ok:
                delivery.ack((lease.ack_id,))
            else:
                attempts = lease.entry.attempts
                delay = sub.backoff(attempts) or min(10.0, 0.1 * 2 ** max(attempts - 1, 0))
                delivery.release((lease,), backoff=False, delay=delay)
        self._want()

    def stop(self) -> None:
        """No more pushes: in-flight POSTs are cancelled and their messages released."""
        self.active = False
        self.sub.delivery.unwant(self)
        for task in list(self.tasks):
            task.cancel()
        leases = [lease for lease in self.sub.delivery.leases.values() if lease.consumer is self]
        self.sub.delivery.release(leases, backoff=False)


class PushDelivery:
    """Push for every push subscription (the state's :class:`~.state.PushHook`)."""

    def __init__(self, signer: TokenSigner) -> None:
        self.client = HttpClient()
        self.signer = signer
        self._subs: dict[Sub, _PushSub] = {}

    def update(self, sub: Sub) -> None:
        wanted = bool(sub.pb.push_config.push_endpoint) and not sub.detached
        current = self._subs.get(sub)
        if wanted and current is None:
            self._subs[sub] = _PushSub(self, sub)
        elif not wanted and current is not None:
            self.remove(sub)

    def remove(self, sub: Sub) -> None:
        current = self._subs.pop(sub, None)
        if current is not None:
            current.stop()

    def stop(self) -> None:
        for sub in list(self._subs):
            self.remove(sub)
        self.client.close()
