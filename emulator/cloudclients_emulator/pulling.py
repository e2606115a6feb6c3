"""Pull and StreamingPull: how leased messages reach a client.

Both are :class:`~.delivery.Consumer` s. A unary Pull that finds nothing waits
(a future, no task) until a dispatch hands it messages or its wait runs out.
A StreamingPull is one object per open stream, fed each request by the gRPC
connection: it counts its leases against the stream's flow control, asks its
subscription for more whenever it has room and the client keeps up. When
the stream goes away its leases stay valid until their ack deadline (a later
unary Acknowledge or ModifyAckDeadline of them works), as the service's do,
and nothing more is handed to it.

Responses are assembled from the stored serialised messages without parsing
them again: a ``ReceivedMessage`` is ack id (field 1), message (field 2,
the stored bytes as they are) and delivery attempt (field 3), and
``PullResponse`` and ``StreamingPullResponse`` both carry them as field 1.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .delivery import Consumer, Delivery, Lease
from .errors import ApiError, Code
from .limits import MAX_PULL_MESSAGES, MAX_RESPONSE_BYTES
from .state import MAX_ACK_DEADLINE, MIN_ACK_DEADLINE, State, Sub, check_ack_ids

if TYPE_CHECKING:
    from .faults import Faults
    from .grpc_h2 import ServerCall

__all__ = ["PULL_WAIT", "PullWaiter", "StreamingPull", "encode_received"]

log = logging.getLogger("cloudclients_emulator")

#: How long a unary Pull waits for messages when none are available (the
#: service returns early too; clients call again).
PULL_WAIT = 0.5
#: Above gRPC's default receive limit: a stock client refuses such a response.
_CLIENT_RECEIVE_LIMIT = 4 * 1024 * 1024

_SMALL = [bytes((i,)) for i in range(128)]
#: ``subscription_properties { exactly_once_delivery_enabled: true }`` (field 4 of
#: StreamingPullResponse): the client switches to its exactly-once mode only if
#: every response says so.
_EXACTLY_ONCE_PROPERTIES = b"\x22\x02\x08\x01"
#: StreamingPullResponse's ``acknowledge_confirmation`` and ``modify_ack_deadline_confirmation`` fields.
_ACK_CONFIRMATION, _MODACK_CONFIRMATION = 5, 3
#: Without a limit (0, or negative: "no limit", per the proto's comments).
_UNLIMITED = 1 << 62


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_received(leases: list[Lease], with_attempt: bool) -> bytes:
    """The ``received_messages`` of a Pull or StreamingPull response, serialised."""
    parts: list[bytes] = []
    append = parts.append
    for lease in leases:
        ack = lease.ack_id.encode("ascii")
        raw = lease.entry.msg.raw
        ack_len, raw_len = _varint(len(ack)), _varint(len(raw))
        body_len = 1 + len(ack_len) + len(ack) + 1 + len(raw_len) + len(raw)
        attempt = b""
        if with_attempt:
            attempt = b"\x18" + _varint(lease.entry.attempts)
            body_len += len(attempt)
        append(b"\x0a" + _varint(body_len) + b"\x0a" + ack_len + ack + b"\x12" + raw_len)
        append(raw)
        if attempt:
            append(attempt)
    return b"".join(parts)


def _warn_if_too_large(sub: Sub, leases: list[Lease]) -> None:
    if len(leases) == 1 and leases[0].entry.msg.size > _CLIENT_RECEIVE_LIMIT and not getattr(sub, "_warned", False):
        sub._warned = True  # type: ignore[attr-defined]
        log.warning("subscription %s: delivering a %d-byte message, more than gRPC's default 4 MiB receive limit; "
                    "a client must raise grpc.max_receive_message_length on its channel to receive it",
                    sub.name, leases[0].entry.msg.size)


class PullWaiter(Consumer):
    """A unary Pull waiting for messages."""

    def __init__(self, sub: Sub, max_messages: int, loop: asyncio.AbstractEventLoop) -> None:
        self.sub = sub
        self.delivery: Delivery = sub.delivery
        self.max_messages = max_messages
        self.ack_deadline = sub.ack_deadline
        self.future: asyncio.Future[bytes] = loop.create_future()
        self._timer = loop.call_later(PULL_WAIT, self._timeout)
        self.future.add_done_callback(self._done)
        self.delivery.want(self)

    def room(self) -> tuple[int, int]:
        return (self.max_messages, MAX_RESPONSE_BYTES) if not self.future.done() else (0, 0)

    def deliver(self, leases: list[Lease]) -> None:
        for lease in leases:
            lease.consumer = None  # a Pull's leases count against nobody's flow control
        if self.future.done():  # cannot happen (a done waiter is not waiting), but never lose messages
            self.delivery.release(leases, backoff=False)
            return
        _warn_if_too_large(self.sub, leases)
        self.future.set_result(encode_received(leases, self.sub.max_attempts() > 0))

    def _timeout(self) -> None:
        if not self.future.done():
            self.future.set_result(b"")

    def _done(self, _: asyncio.Future[bytes]) -> None:
        self._timer.cancel()
        self.delivery.unwant(self)


def pull(state: State, request: Any, loop: asyncio.AbstractEventLoop) -> bytes | asyncio.Future[bytes]:
    """Unary Pull: what is available now, or a future that waits up to :data:`PULL_WAIT` for some."""
    if request.max_messages <= 0:
        raise ApiError(Code.INVALID_ARGUMENT, "max_messages must be positive")
    sub = state.pullable(request.subscription)
    leases = sub.delivery.take(None, min(request.max_messages, MAX_PULL_MESSAGES), MAX_RESPONSE_BYTES,
                               sub.ack_deadline)
    if leases:
        _warn_if_too_large(sub, leases)
        return encode_received(leases, sub.max_attempts() > 0)
    if request.return_immediately:
        return b""
    return PullWaiter(sub, min(request.max_messages, MAX_PULL_MESSAGES), loop).future


class StreamingPull(Consumer):
    """One open StreamingPull (the gRPC stream handler and a delivery consumer)."""

    paced = True

    def __init__(self, state: State, faults: Faults, call: ServerCall) -> None:
        self.state = state
        self.faults = faults
        self.call = call
        self.sub: Sub | None = None
        self.delivery: Delivery | None = None
        self.stream_id = 0
        self.held: dict[str, Lease] = {}
        self.out_bytes = 0
        self.max_messages = self.max_bytes = _UNLIMITED
        self.closed = False
        self._pending: list[Any] | None = None  # requests that came during an injected delay

    # -- gRPC stream handler ------------------------------------------------------------------

    def on_message(self, request: Any) -> None:
        if self.closed:
            return
        if self._pending is not None:
            self._pending.append(request)
            return
        if self.sub is None:
            self._first(request)
        else:
            self._handle(request)

    def on_half_close(self) -> None:
        # After the first request a half-close changes nothing: the stream
        # delivers until the client cancels it, as the service's does (ending it
        # OK would stop a client's subscriber for good). Half-closed before any
        # request, there is no subscription to stream: refused like an empty
        # first request.
        if self.sub is None and self._pending is None and not self.closed:
            self._fail(Code.INVALID_ARGUMENT, "The stream ended before its first request named a subscription")

    def on_cancel(self) -> None:
        """The client cancelled (every subscriber shutdown does) or the connection dropped."""
        self._close()

    def on_writable(self) -> None:
        self._want()

    # -- opening ---------------------------------------------------------------------------------

    def _first(self, request: Any) -> None:
        fault = self.faults.take("StreamingPull")
        if fault is None:
            self._open(request)
            return
        if fault.delay_ms:
            self._pending = []
            asyncio.get_running_loop().call_later(fault.delay_ms / 1000, self._after_delay, request, fault.status)
        elif fault.status is not Code.OK:
            self._fail(fault.status, "Injected fault for StreamingPull")
        else:
            self._open(request)

    def _after_delay(self, request: Any, status: Code) -> None:
        pending, self._pending = self._pending or [], None
        if self.closed:
            return
        if status is not Code.OK:
            self._fail(status, "Injected fault for StreamingPull")
            return
        self._open(request)
        for later in pending:
            if not self.closed:
                self._handle(later)

    def _fail(self, code: Code, message: str) -> None:
        self.closed = True
        self.call.finish(code, message)

    def _open(self, request: Any) -> None:
        try:
            sub = self.state.pullable(request.subscription)
            deadline = request.stream_ack_deadline_seconds
            if not MIN_ACK_DEADLINE <= deadline <= MAX_ACK_DEADLINE:
                raise ApiError(Code.INVALID_ARGUMENT,
                               f"Invalid stream_ack_deadline_seconds: {deadline} "
                               f"({MIN_ACK_DEADLINE}..{MAX_ACK_DEADLINE})")
        except ApiError as exc:
            self._fail(exc.code, exc.message)
            return
        self.sub = sub
        self.delivery = sub.delivery
        self.ack_deadline = float(deadline)
        self.max_messages = request.max_outstanding_messages if request.max_outstanding_messages > 0 else _UNLIMITED
        self.max_bytes = request.max_outstanding_bytes if request.max_outstanding_bytes > 0 else _UNLIMITED
        self.stream_id = self.state.add_stream(self)
        self._handle(request, first=True)
        self._want()

    # -- requests on the stream ----------------------------------------------------------------------

    def _handle(self, request: Any, *, first: bool = False) -> None:
        # Acks, nacks and lease extensions may come on the stream; an empty
        # request is the client's heartbeat. The whole request is checked
        # before any of it applies; a bad one ends the stream, as the service does.
        assert self.delivery is not None and self.sub is not None
        try:
            if not first:
                self._check_later(request)
            self._check(request)
        except ApiError as exc:
            self.end(exc.code, exc.message)
            return
        invalid_acks: list[str] = []
        valid_acks: list[str] = []
        if request.ack_ids:
            invalid_acks = self.delivery.ack(request.ack_ids)
            if self.sub.exactly_once:
                bad = set(invalid_acks)
                valid_acks = [a for a in request.ack_ids if a not in bad]
        if request.modify_deadline_ack_ids:
            by_deadline: dict[int, list[str]] = {}
            for ack_id, seconds in zip(request.modify_deadline_ack_ids, request.modify_deadline_seconds,
                                       strict=True):
                by_deadline.setdefault(seconds, []).append(ack_id)
            invalid_mods: list[str] = []
            for seconds, ack_ids in by_deadline.items():
                invalid_mods += self.delivery.modify(ack_ids, seconds)
            if self.sub.exactly_once:
                bad = set(invalid_mods)
                ok = [a for a in request.modify_deadline_ack_ids if a not in bad]
                self._confirm(_MODACK_CONFIRMATION, ok, invalid_mods)
        if request.ack_ids and self.sub.exactly_once:
            self._confirm(_ACK_CONFIRMATION, valid_acks, invalid_acks)
        if request.stream_ack_deadline_seconds:
            self.ack_deadline = float(request.stream_ack_deadline_seconds)

    @staticmethod
    def _check_later(request: Any) -> None:
        # The proto: ``subscription`` "must not be set in subsequent requests"; the flow-control
        # fields and ``protocol_version`` "can only be set on the initial StreamingPullRequest. If it
        # is set on a subsequent request, the stream will be aborted with status INVALID_ARGUMENT".
        # (``client_id`` "only needs to be provided on the initial request": allowed later.)
        # On older google.pubsub_v1 types (google-cloud-pubsub 2.30, the lowest allowed) there is no
        # ``protocol_version``: the field is dropped as unknown when the request is decoded, so it is unset.
        for name in ("subscription", "max_outstanding_messages", "max_outstanding_bytes", "protocol_version"):
            value = getattr(request, name, 0)
            if value:
                raise ApiError(Code.INVALID_ARGUMENT,
                               f"{name} can only be set on the initial StreamingPullRequest (got {value!r} "
                               f"on a later one)")

    @staticmethod
    def _check(request: Any) -> None:
        deadline = request.stream_ack_deadline_seconds
        if deadline and not MIN_ACK_DEADLINE <= deadline <= MAX_ACK_DEADLINE:
            raise ApiError(Code.INVALID_ARGUMENT, f"Invalid stream_ack_deadline_seconds: {deadline} "
                           f"({MIN_ACK_DEADLINE}..{MAX_ACK_DEADLINE})")
        if len(request.modify_deadline_ack_ids) != len(request.modify_deadline_seconds):
            raise ApiError(Code.INVALID_ARGUMENT,
                           f"modify_deadline_seconds has {len(request.modify_deadline_seconds)} entries, "
                           f"modify_deadline_ack_ids {len(request.modify_deadline_ack_ids)}: they must match")
        for seconds in request.modify_deadline_seconds:
            if not 0 <= seconds <= MAX_ACK_DEADLINE:
                raise ApiError(Code.INVALID_ARGUMENT, f"Invalid modify_deadline_seconds: {seconds}; "
                               f"it must be between 0 and {MAX_ACK_DEADLINE} seconds")
        check_ack_ids(request.ack_ids)
        check_ack_ids(request.modify_deadline_ack_ids)

    def _confirm(self, field: int, ok: list[str], invalid: list[str]) -> None:
        """Tell an exactly-once client which of its stream acks (``acknowledge_confirmation``) or lease
        changes (``modify_ack_deadline_confirmation``) took effect: *ok* as the confirmation's
        ``ack_ids`` (field 1), *invalid* as its ``invalid_ack_ids`` (field 2)."""
        body = b"".join(b"\x0a" + _varint(len(a)) + a.encode("ascii") for a in ok)
        body += b"".join(b"\x12" + _varint(len(a)) + a.encode("ascii") for a in invalid)
        self.call.send(bytes((field << 3 | 2,)) + _varint(len(body)) + body + _EXACTLY_ONCE_PROPERTIES)

    # -- delivery.Consumer ------------------------------------------------------------------------------

    def room(self) -> tuple[int, int]:
        if self.closed or not self.call.writable:
            return 0, 0
        return self.max_messages - len(self.held), self.max_bytes - self.out_bytes

    def deliver(self, leases: list[Lease]) -> None:
        assert self.delivery is not None and self.sub is not None
        if self.closed:  # cannot happen (a closed stream has no room), but never lose messages
            self.delivery.release(leases, backoff=False)
            return
        held = self.held
        for lease in leases:
            held[lease.ack_id] = lease
            self.out_bytes += len(lease.entry.msg.raw)
        _warn_if_too_large(self.sub, leases)
        body = encode_received(leases, self.sub.max_attempts() > 0)
        self.call.send(body + _EXACTLY_ONCE_PROPERTIES if self.sub.exactly_once else body)
        self._want()

    def released(self, lease: Lease) -> None:
        if self.held.pop(lease.ack_id, None) is not None:
            self.out_bytes -= len(lease.entry.msg.raw)
            self._want()

    def _want(self) -> None:
        delivery = self.delivery
        if self.closed or delivery is None or self in delivery.waiting or not self.call.writable:
            return
        if len(self.held) < self.max_messages and self.out_bytes < self.max_bytes:
            delivery.want(self)

    # -- ending ----------------------------------------------------------------------------------------

    def end(self, code: Code, message: str) -> None:
        """End the stream from the server side (state.StreamHandle)."""
        self._close()
        self.call.finish(code, message)

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.stream_id:
            self.state.remove_stream(self.stream_id)
        if self.delivery is not None:
            self.delivery.unwant(self)
        # The leases outlive the stream, as the service's do: valid until their
        # deadline (then redelivered), counted against nobody's flow control.
        for lease in self.held.values():
            lease.consumer = None
        self.held.clear()
        self.out_bytes = 0

