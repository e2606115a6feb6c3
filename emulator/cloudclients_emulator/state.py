"""All Pub/Sub state: topics, subscriptions, leases, snapshots — behind one lock.

One ``threading.Condition`` guards everything. Calls are short (microseconds of
dict work), so a single lock is simpler and fast enough for an emulator; pull
and streaming-pull callers wait on the condition for messages instead of
polling. Lease expiry is evaluated lazily whenever a subscription is looked at
(and by the housekeeping thread), so no timer per message is needed.

Messages are stored once per subscription as a :class:`Stored` (the protobuf
message is shared, never copied). A subscription's ``backlog`` holds what can be
delivered, ``leases`` what is out with a client. For seek and snapshots,
``history`` keeps every message that is unacked, or acked but still needed
(``retain_acked_messages`` or a snapshot of the subscription).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from ._types import pubsub
from .errors import ApiError
from .filters import FilterError, Predicate, compile_filter
from .names import check_name

__all__ = ["DELETED_TOPIC", "Caps", "State", "Stream", "pb"]

log = logging.getLogger("cloudclients_emulator")

DELETED_TOPIC = "_deleted-topic_"
DEFAULT_ACK_DEADLINE = 10
MIN_ACK_DEADLINE, MAX_ACK_DEADLINE = 10, 600


class _PB:
    """The raw protobuf classes of google.pubsub.v1 (faster than proto-plus wrappers)."""

    Topic: Any = pubsub.Topic.pb()
    Subscription: Any = pubsub.Subscription.pb()
    PubsubMessage: Any = pubsub.PubsubMessage.pb()
    ReceivedMessage: Any = pubsub.ReceivedMessage.pb()
    Snapshot: Any = pubsub.Snapshot.pb()


pb = _PB


@dataclass
class Caps:
    """Memory bounds per subscription (backlog plus outstanding)."""

    messages: int = 1_000_000
    bytes: int = 1 << 30


class Msg:
    """A published message as the emulator keeps it: serialised, plus the fields it reads.

    A parsed ``PubsubMessage`` costs about 930 bytes of memory for a 100-byte
    payload, its serialised form about 180: backlogs of tens of thousands of
    messages fit in a small process. The same object is shared by every
    subscription of the topic.
    """

    __slots__ = ("message_id", "ordering_key", "publish_ns", "raw")

    def __init__(self, message: Any) -> None:
        self.raw: bytes = message.SerializeToString()
        self.message_id: str = message.message_id
        self.ordering_key: str = message.ordering_key
        self.publish_ns: int = message.publish_time.ToNanoseconds()

    @property
    def size(self) -> int:
        return len(self.raw)

    def proto(self) -> Any:
        """A fresh ``PubsubMessage`` (for the rare paths that edit one: dead-lettering)."""
        return pb.PubsubMessage.FromString(self.raw)


@dataclass(eq=False, slots=True)
class Stored:
    """One message as held by one subscription."""

    seq: int
    msg: Msg
    attempts: int = 0
    available_at: float = 0.0

    @property
    def size(self) -> int:
        return self.msg.size


@dataclass(eq=False, slots=True)
class Lease:
    stored: Stored
    deadline: float
    stream: Stream | None


@dataclass(eq=False)
class Stream:
    """One open StreamingPull: its flow control and what it holds."""

    id: int
    sub: Sub
    ack_deadline: float
    max_messages: int
    max_bytes: int
    out_messages: int = 0
    out_bytes: int = 0
    closed: bool = False
    broken: grpc.StatusCode | None = None


@dataclass(eq=False)
class Snap:
    pb: Any  # Snapshot
    sub_name: str
    unacked: set[int]
    taken_at: float


@dataclass(eq=False)
class Sub:
    pb: Any  # Subscription
    predicate: Predicate | None
    backlog: dict[int, Stored] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    key_busy: set[str] = field(default_factory=set)
    key_queue: dict[str, list[int]] = field(default_factory=dict)
    history: dict[int, Msg] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    snapshots: int = 0
    bytes: int = 0
    detached: bool = False
    #: The latest ``available_at`` ever given to a backlog message: while it is
    #: in the past, no message is backed off and the backlog need not be scanned.
    delayed_until: float = 0.0

    @property
    def name(self) -> str:
        return str(self.pb.name)

    @property
    def ordered(self) -> bool:
        return bool(self.pb.enable_message_ordering)


class State:
    """The emulator's data and every operation on it (thread-safe)."""

    def __init__(self, caps: Caps | None = None) -> None:
        self.cond = threading.Condition()
        self.caps = caps or Caps()
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._streams = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        """Forget everything; open streams are broken (UNAVAILABLE) so clients reconnect."""
        with self.cond:
            self.topics: dict[str, Any] = {}
            self.subs: dict[str, Sub] = {}
            self.snaps: dict[str, Snap] = {}
            for stream in getattr(self, "streams", {}).values():
                stream.broken = grpc.StatusCode.UNAVAILABLE
            self.streams: dict[int, Stream] = {}
            self.cond.notify_all()

    # -- helpers --------------------------------------------------------------------

    def _topic(self, name: str) -> Any:
        check_name(name, "topics")
        topic = self.topics.get(name)
        if topic is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"Topic not found: {name}")
        return topic

    def sub(self, name: str) -> Sub:
        check_name(name, "subscriptions")
        sub = self.subs.get(name)
        if sub is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"Subscription does not exist: {name}")
        return sub

    def _snap(self, name: str) -> Snap:
        check_name(name, "snapshots")
        snap = self.snaps.get(name)
        if snap is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"Snapshot does not exist: {name}")
        return snap

    # -- topics ---------------------------------------------------------------------------

    def create_topic(self, topic: Any) -> Any:
        with self.cond:
            check_name(topic.name, "topics")
            if topic.name in self.topics:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Topic already exists: {topic.name}")
            stored = pb.Topic()
            stored.CopyFrom(topic)
            self.topics[topic.name] = stored
            return stored

    def get_topic(self, name: str) -> Any:
        with self.cond:
            return self._topic(name)

    def update_topic(self, topic: Any, paths: Iterable[str]) -> Any:
        with self.cond:
            current = self._topic(topic.name)
            paths = list(paths)
            if not paths:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "update_mask must name at least one field")
            for path in paths:
                if path == "name" or path not in pb.Topic.DESCRIPTOR.fields_by_name:
                    raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid update_mask path: {path}")
                _copy_field(topic, current, path)
            return current

    def list_topics(self, project: str) -> list[Any]:
        with self.cond:
            prefix = f"{project}/topics/"
            return [t for n, t in sorted(self.topics.items()) if n.startswith(prefix)]

    def topic_subscriptions(self, name: str) -> list[str]:
        with self.cond:
            self._topic(name)
            return sorted(s.name for s in self.subs.values() if s.pb.topic == name)

    def topic_snapshots(self, name: str) -> list[str]:
        with self.cond:
            self._topic(name)
            return sorted(n for n, s in self.snaps.items() if s.pb.topic == name)

    def delete_topic(self, name: str) -> None:
        with self.cond:
            self._topic(name)
            del self.topics[name]
            for sub in self.subs.values():
                if sub.pb.topic == name:
                    sub.pb.topic = DELETED_TOPIC

    def publish(self, topic_name: str, messages: Iterable[Any]) -> list[str]:
        messages = list(messages)
        with self.cond:
            self._topic(topic_name)
            if not messages:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "The request contains no messages")
            targets = [s for s in self.subs.values() if s.pb.topic == topic_name and not s.detached]
            now_ns = time.time_ns()
            ids: list[str] = []
            stamped: list[Any] = []  # PubsubMessage copies with id and publish time
            for message in messages:
                if not message.data and not message.attributes:
                    raise ApiError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "Some messages are empty: a message needs data or at least one attribute",
                    )
                copy = pb.PubsubMessage()
                copy.CopyFrom(message)
                copy.message_id = str(next(self._ids))
                copy.publish_time.FromNanoseconds(now_ns)
                stamped.append(copy)
                ids.append(copy.message_id)
            total = sum(m.ByteSize() for m in stamped)
            for sub in targets:
                count = len(sub.backlog) + len(sub.leases)
                if count + len(stamped) > self.caps.messages or sub.bytes + total > self.caps.bytes:
                    log.warning(
                        "subscription %s is full (%d messages, %d bytes; caps %d messages, %d bytes): "
                        "refusing Publish with RESOURCE_EXHAUSTED. Ack messages, or raise the caps.",
                        sub.name, count, sub.bytes, self.caps.messages, self.caps.bytes,
                    )
                    raise ApiError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"Subscription {sub.name} holds {count} messages / {sub.bytes} bytes; the emulator's cap "
                        f"is {self.caps.messages} messages / {self.caps.bytes} bytes",
                    )
            for copy in stamped:
                self._route_all(targets, copy)
            self.cond.notify_all()
            return ids

    def _route_all(self, subs: list[Sub], message: Any) -> None:
        """Add *message* (a ``PubsubMessage``) to each of *subs* whose filter it passes."""
        kept = [s for s in subs if s.predicate is None or s.predicate(message.attributes)]
        # Filtered out: acknowledged on the subscriber's behalf, as by the service.
        if kept:
            msg = Msg(message)
            for sub in kept:
                self._route(sub, msg)

    def _route(self, sub: Sub, msg: Msg) -> None:
        seq = next(self._seq)
        sub.backlog[seq] = Stored(seq, msg)
        sub.bytes += msg.size
        sub.history[seq] = msg
        if sub.ordered and msg.ordering_key:
            sub.key_queue.setdefault(msg.ordering_key, []).append(seq)

    # -- subscriptions --------------------------------------------------------------

    def create_subscription(self, request: Any) -> Any:
        with self.cond:
            check_name(request.name, "subscriptions")
            if request.name in self.subs:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Subscription already exists: {request.name}")
            self._topic(request.topic)
            sub_pb = pb.Subscription()
            sub_pb.CopyFrom(request)
            _normalise_subscription(sub_pb)
            predicate = _compile(sub_pb.filter)
            if sub_pb.HasField("dead_letter_policy") and sub_pb.dead_letter_policy.dead_letter_topic:
                self._topic(sub_pb.dead_letter_policy.dead_letter_topic)
            self.subs[request.name] = Sub(sub_pb, predicate)
            return sub_pb

    def get_subscription(self, name: str) -> Any:
        with self.cond:
            return self.sub(name).pb

    def update_subscription(self, subscription: Any, paths: Iterable[str]) -> Any:
        with self.cond:
            sub = self.sub(subscription.name)
            paths = list(paths)
            if not paths:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "update_mask must name at least one field")
            for path in paths:
                top = path.split(".")[0]
                if top in ("name", "topic", "filter", "enable_message_ordering"):
                    raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Field {path} cannot be updated")
                if top not in pb.Subscription.DESCRIPTOR.fields_by_name:
                    raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid update_mask path: {path}")
                _copy_field(subscription, sub.pb, top)
            _normalise_subscription(sub.pb)
            self.cond.notify_all()
            return sub.pb

    def list_subscriptions(self, project: str) -> list[Any]:
        with self.cond:
            prefix = f"{project}/subscriptions/"
            return [s.pb for n, s in sorted(self.subs.items()) if n.startswith(prefix)]

    def delete_subscription(self, name: str) -> None:
        with self.cond:
            self.sub(name)
            sub = self.subs.pop(name)
            for stream in self.streams.values():
                if stream.sub is sub:
                    stream.broken = grpc.StatusCode.NOT_FOUND
            self.cond.notify_all()

    def detach_subscription(self, name: str) -> None:
        with self.cond:
            sub = self.sub(name)
            sub.detached = True
            sub.pb.detached = True
            sub.backlog.clear()
            sub.leases.clear()
            sub.key_busy.clear()
            sub.key_queue.clear()
            sub.bytes = 0
            for stream in self.streams.values():
                if stream.sub is sub:
                    stream.broken = grpc.StatusCode.FAILED_PRECONDITION
            self.cond.notify_all()

    def modify_push_config(self, name: str, push_config: Any) -> None:
        with self.cond:
            sub = self.sub(name)
            sub.pb.push_config.CopyFrom(push_config)
            self.cond.notify_all()

    # -- delivery ---------------------------------------------------------------------

    def _expire(self, sub: Sub, now: float) -> None:
        expired = [ack_id for ack_id, lease in sub.leases.items() if lease.deadline <= now]
        for ack_id in expired:
            self._release(sub, ack_id, now, backoff=True)

    def _release(self, sub: Sub, ack_id: str, now: float, *, backoff: bool) -> None:
        """Put a leased message back in the backlog (nack, expiry, dropped stream)."""
        lease = sub.leases.pop(ack_id)
        stored = lease.stored
        if lease.stream is not None:
            lease.stream.out_messages -= 1
            lease.stream.out_bytes -= stored.size
        dlp = sub.pb.dead_letter_policy if sub.pb.HasField("dead_letter_policy") else None
        if dlp is not None and dlp.dead_letter_topic and stored.attempts >= (dlp.max_delivery_attempts or 5):
            # Out of attempts: forwarded now, as the service does, not at the next pull.
            self._dead_letter(sub, stored, dlp)
            return
        stored.available_at = now + (_backoff(sub.pb, stored.attempts) if backoff else 0.0)
        sub.delayed_until = max(sub.delayed_until, stored.available_at)
        sub.backlog[stored.seq] = stored
        if stored.msg.ordering_key:
            sub.key_busy.discard(stored.msg.ordering_key)

    def _finish(self, sub: Sub, stored: Stored) -> None:
        """The message is done for this subscription (acked or dead-lettered)."""
        sub.bytes -= stored.size
        key = stored.msg.ordering_key
        if key:
            sub.key_busy.discard(key)
            queue = sub.key_queue.get(key)
            if queue:
                i = bisect.bisect_left(queue, stored.seq)
                if i < len(queue) and queue[i] == stored.seq:
                    queue.pop(i)
                if not queue:
                    del sub.key_queue[key]
        if sub.pb.retain_acked_messages or sub.snapshots:
            sub.acked.add(stored.seq)
        else:
            sub.history.pop(stored.seq, None)

    def _take(self, sub: Sub, max_messages: int, max_bytes: int, stream: Stream | None, now: float) -> list[Any]:
        """Lease up to *max_messages* available messages; return ReceivedMessages."""
        if sub.detached:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, f"Subscription {sub.name} is detached")
        self._expire(sub, now)
        if not sub.backlog or max_messages <= 0:
            return []
        out: list[Any] = []
        taken_bytes = 0
        dlp = sub.pb.dead_letter_policy if sub.pb.HasField("dead_letter_policy") else None
        max_attempts = (dlp.max_delivery_attempts or 5) if dlp is not None and dlp.dead_letter_topic else 0
        deadline = now + (stream.ack_deadline if stream is not None else sub.pb.ack_deadline_seconds)
        # Scan a snapshot of the head of the backlog, not a copy of all of it
        # (copying a large backlog on every take made streaming pull quadratic).
        # Only when that head holds too few deliverable messages (backoff,
        # ordering keys) is the whole backlog scanned; revisiting an entry
        # skipped in the first pass is harmless, it is skipped again.
        scan = max_messages + 64
        while True:
            chunk = list(itertools.islice(sub.backlog.items(), scan))
            for seq, stored in chunk:
                if len(out) >= max_messages or (out and taken_bytes + stored.size > max_bytes):
                    return out
                if stored.available_at > now:
                    continue
                key = stored.msg.ordering_key
                if key and sub.ordered and (key in sub.key_busy or sub.key_queue.get(key, [seq])[0] != seq):
                    continue
                del sub.backlog[seq]
                if max_attempts and stored.attempts >= max_attempts:
                    self._dead_letter(sub, stored, dlp)
                    continue
                stored.attempts += 1
                ack_id = f"{seq}-{stored.attempts}-{id(sub) & 0xFFFF:x}"
                sub.leases[ack_id] = Lease(stored, deadline, stream)
                if stream is not None:
                    stream.out_messages += 1
                    stream.out_bytes += stored.size
                if key:
                    sub.key_busy.add(key)
                received = pb.ReceivedMessage(ack_id=ack_id)
                received.message.MergeFromString(stored.msg.raw)
                if max_attempts:
                    received.delivery_attempt = stored.attempts
                out.append(received)
                taken_bytes += stored.size
            if len(chunk) < scan:
                return out
            scan = len(sub.backlog) + 1

    def _dead_letter(self, sub: Sub, stored: Stored, dlp: Any) -> None:
        self._finish(sub, stored)
        topic_name = dlp.dead_letter_topic
        if topic_name not in self.topics:
            log.warning("dead-letter topic %s of %s does not exist: message %s dropped",
                        topic_name, sub.name, stored.msg.message_id)
            return
        copy = stored.msg.proto()
        source_publish_time = copy.publish_time.ToJsonString()  # before the copy gets its own
        copy.message_id = str(next(self._ids))
        copy.publish_time.FromNanoseconds(time.time_ns())
        # The attributes the service adds to forwarded messages.
        copy.attributes["CloudPubSubDeadLetterSourceSubscription"] = sub.name.rsplit("/", 1)[1]
        copy.attributes["CloudPubSubDeadLetterSourceSubscriptionProject"] = sub.name.split("/")[1]
        copy.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] = str(stored.attempts)
        copy.attributes["CloudPubSubDeadLetterSourceTopicPublishTime"] = source_publish_time
        targets = [t for t in self.subs.values() if t.pb.topic == topic_name and not t.detached]
        self._route_all(targets, copy)

    def pull(self, name: str, max_messages: int, wait: float) -> list[Any]:
        """Unary Pull: return what is available, waiting up to *wait* seconds for something."""
        if max_messages <= 0:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "max_messages must be positive")
        deadline = time.monotonic() + wait
        with self.cond:
            while True:
                sub = self.sub(name)
                got = self._take(sub, max_messages, 1 << 62, None, time.monotonic())
                remaining = deadline - time.monotonic()
                if got or remaining <= 0:
                    return got
                self.cond.wait(min(remaining, self._next_wakeup(sub)))

    def _next_wakeup(self, sub: Sub) -> float:
        """Seconds until a lease expires or a backed-off message becomes available."""
        now = time.monotonic()
        soonest = 1.0
        for lease in sub.leases.values():
            soonest = min(soonest, lease.deadline - now)
        if sub.delayed_until > now:
            for stored in sub.backlog.values():
                if stored.available_at > now:
                    soonest = min(soonest, stored.available_at - now)
        return max(soonest, 0.005)

    def acknowledge(self, name: str, ack_ids: Iterable[str]) -> None:
        with self.cond:
            sub = self.sub(name)
            for ack_id in ack_ids:
                lease = sub.leases.pop(ack_id, None)
                if lease is None:
                    continue  # expired or unknown: the service ignores it too
                if lease.stream is not None:
                    lease.stream.out_messages -= 1
                    lease.stream.out_bytes -= lease.stored.size
                self._finish(sub, lease.stored)
            self.cond.notify_all()

    def modify_ack_deadline(self, name: str, ack_ids: Iterable[str], seconds: int) -> None:
        if not 0 <= seconds <= MAX_ACK_DEADLINE:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Invalid ack deadline: {seconds}; it must be between 0 and {MAX_ACK_DEADLINE} seconds")
        with self.cond:
            sub = self.sub(name)
            now = time.monotonic()
            for ack_id in ack_ids:
                lease = sub.leases.get(ack_id)
                if lease is None:
                    continue
                if seconds == 0:
                    self._release(sub, ack_id, now, backoff=True)
                else:
                    lease.deadline = now + seconds
            self.cond.notify_all()

    # -- streaming pull ---------------------------------------------------------------------

    def open_stream(self, request: Any) -> Stream:
        with self.cond:
            sub = self.sub(request.subscription)
            deadline = request.stream_ack_deadline_seconds
            if not MIN_ACK_DEADLINE <= deadline <= MAX_ACK_DEADLINE:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Invalid stream_ack_deadline_seconds: {deadline} (10..600)")
            stream = Stream(
                id=next(self._streams), sub=sub, ack_deadline=float(deadline),
                max_messages=request.max_outstanding_messages or 1 << 62,
                max_bytes=request.max_outstanding_bytes or 1 << 62,
            )
            self.streams[stream.id] = stream
            return stream

    def stream_take(self, stream: Stream, wait: float) -> list[Any]:
        """Wait up to *wait* seconds for messages this stream may receive (flow control)."""
        deadline = time.monotonic() + wait
        with self.cond:
            while not stream.closed and stream.broken is None:
                room = stream.max_messages - stream.out_messages
                room_bytes = stream.max_bytes - stream.out_bytes
                got = self._take(stream.sub, min(room, 1000), max(room_bytes, 1), stream, time.monotonic()) \
                    if room > 0 and room_bytes > 0 else []
                remaining = deadline - time.monotonic()
                if got or remaining <= 0:
                    return got
                self.cond.wait(min(remaining, self._next_wakeup(stream.sub)))
            return []

    def close_stream(self, stream: Stream) -> None:
        """The stream is gone (cancelled, broken, failed): its messages are available again at once."""
        with self.cond:
            if stream.closed:
                return
            stream.closed = True
            self.streams.pop(stream.id, None)
            sub = stream.sub
            now = time.monotonic()
            for ack_id in [a for a, lease in sub.leases.items() if lease.stream is stream]:
                self._release(sub, ack_id, now, backoff=False)
            self.cond.notify_all()

    def break_streams(self, code: grpc.StatusCode) -> int:
        with self.cond:
            for stream in self.streams.values():
                stream.broken = code
            self.cond.notify_all()
            return len(self.streams)

    # -- snapshots and seek -------------------------------------------------------------------

    def create_snapshot(self, name: str, sub_name: str, labels: dict[str, str]) -> Any:
        with self.cond:
            check_name(name, "snapshots")
            if name in self.snaps:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Snapshot already exists: {name}")
            sub = self.sub(sub_name)
            if sub.pb.topic == DELETED_TOPIC:
                raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, f"The topic of {sub_name} was deleted")
            snap_pb = pb.Snapshot(name=name, topic=sub.pb.topic, labels=labels)
            snap_pb.expire_time.FromSeconds(int(time.time()) + 7 * 24 * 3600)
            unacked = set(sub.backlog) | {lease.stored.seq for lease in sub.leases.values()}
            self.snaps[name] = Snap(snap_pb, sub_name, unacked, time.time())
            sub.snapshots += 1
            return snap_pb

    def get_snapshot(self, name: str) -> Any:
        with self.cond:
            return self._snap(name).pb

    def update_snapshot(self, snapshot: Any, paths: Iterable[str]) -> Any:
        with self.cond:
            snap = self._snap(snapshot.name)
            paths = list(paths)
            if not paths:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "update_mask must name at least one field")
            for path in paths:
                if path not in ("labels", "expire_time"):
                    raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid update_mask path: {path}")
                _copy_field(snapshot, snap.pb, path)
            return snap.pb

    def list_snapshots(self, project: str) -> list[Any]:
        with self.cond:
            prefix = f"{project}/snapshots/"
            return [s.pb for n, s in sorted(self.snaps.items()) if n.startswith(prefix)]

    def delete_snapshot(self, name: str) -> None:
        with self.cond:
            snap = self._snap(name)
            del self.snaps[name]
            sub = self.subs.get(snap.sub_name)
            if sub is not None:
                sub.snapshots = max(0, sub.snapshots - 1)

    def seek(self, sub_name: str, *, time_ns: int | None = None, snapshot: str | None = None) -> None:
        with self.cond:
            sub = self.sub(sub_name)
            if snapshot is not None:
                snap = self._snap(snapshot)
                if snap.pb.topic != sub.pb.topic:
                    raise ApiError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"Snapshot {snapshot} is for another topic than {sub_name}")
                cutoff_ns = int(snap.taken_at * 1e9)

                def unacked(seq: int, msg: Msg) -> bool:
                    return seq in snap.unacked or msg.publish_ns >= cutoff_ns
            else:
                target = time_ns or 0

                def unacked(seq: int, msg: Msg) -> bool:
                    return msg.publish_ns >= target and (
                        seq not in sub.acked or bool(sub.pb.retain_acked_messages)
                    )

            now = time.monotonic()
            for ack_id in list(sub.leases):
                self._release(sub, ack_id, now, backoff=False)
            sub.backlog.clear()
            sub.key_busy.clear()
            sub.key_queue.clear()
            sub.bytes = 0
            new_acked: set[int] = set()
            for seq, msg in sorted(sub.history.items()):
                if unacked(seq, msg):
                    sub.backlog[seq] = Stored(seq, msg)
                    sub.bytes += msg.size
                    if sub.ordered and msg.ordering_key:
                        sub.key_queue.setdefault(msg.ordering_key, []).append(seq)
                else:
                    new_acked.add(seq)
            sub.acked = new_acked
            self.cond.notify_all()

    # -- push --------------------------------------------------------------------------------------

    def push_work(self, now: float) -> list[tuple[Sub, Any]]:
        """Lease one available message per ready push subscription (for the push thread)."""
        with self.cond:
            work = []
            for sub in list(self.subs.values()):
                if sub.pb.push_config.push_endpoint and not sub.detached:
                    for received in self._take(sub, 8, 1 << 62, None, now):
                        work.append((sub, received))
            return work

    def push_failed(self, name: str, ack_id: str) -> None:
        """A push was not acknowledged: retry it after the push backoff."""
        with self.cond:
            sub = self.subs.get(name)
            if sub is None or ack_id not in sub.leases:
                return
            stored = sub.leases[ack_id].stored
            self._release(sub, ack_id, time.monotonic(), backoff=False)
            delay = _backoff(sub.pb, stored.attempts) or min(10.0, 0.1 * 2 ** max(stored.attempts - 1, 0))
            stored.available_at = time.monotonic() + delay
            sub.delayed_until = max(sub.delayed_until, stored.available_at)
            self.cond.notify_all()

    def stats(self) -> dict[str, Any]:
        with self.cond:
            return {
                "topics": len(self.topics),
                "subscriptions": {
                    n: {"backlog": len(s.backlog), "outstanding": len(s.leases), "bytes": s.bytes}
                    for n, s in sorted(self.subs.items())
                },
                "snapshots": len(self.snaps),
                "open_streams": len(self.streams),
            }


def _compile(text: str) -> Predicate | None:
    try:
        return compile_filter(text)
    except FilterError as exc:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid filter: {exc}") from None


def _normalise_subscription(sub: Any) -> None:
    if sub.ack_deadline_seconds == 0:
        sub.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
    if not MIN_ACK_DEADLINE <= sub.ack_deadline_seconds <= MAX_ACK_DEADLINE:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid ack_deadline_seconds: {sub.ack_deadline_seconds}; it must be between "
            f"{MIN_ACK_DEADLINE} and {MAX_ACK_DEADLINE}",
        )
    if sub.HasField("dead_letter_policy") and sub.dead_letter_policy.dead_letter_topic:
        attempts = sub.dead_letter_policy.max_delivery_attempts or 5
        if not 5 <= attempts <= 100:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Invalid max_delivery_attempts: {attempts}; it must be between 5 and 100")
        sub.dead_letter_policy.max_delivery_attempts = attempts
    if not sub.HasField("message_retention_duration"):
        sub.message_retention_duration.FromSeconds(7 * 24 * 3600)  # the service's default
    # Exactly-once delivery semantics are not implemented: never claim them.
    sub.enable_exactly_once_delivery = False
    sub.state = int(pubsub.Subscription.State.ACTIVE)


def _backoff(sub: Any, attempts: int) -> float:
    """Delay before a nacked or expired message is redelivered (retry policy)."""
    if not sub.HasField("retry_policy"):
        return 0.0
    low = sub.retry_policy.minimum_backoff.ToTimedelta().total_seconds() or 10.0
    high = sub.retry_policy.maximum_backoff.ToTimedelta().total_seconds() or 600.0
    return float(min(high, low * (2 ** max(attempts - 1, 0))))


def _copy_field(source: Any, target: Any, path: str) -> None:
    field_desc = source.DESCRIPTOR.fields_by_name[path]
    repeated = bool(getattr(field_desc, "is_repeated", False)) or getattr(field_desc, "label", 1) == 3
    if repeated:
        target.ClearField(path)
        container = getattr(target, path)
        value = getattr(source, path)
        if hasattr(container, "update"):
            container.update(value)
        else:
            container.extend(value)
    elif field_desc.message_type is not None:
        if source.HasField(path):
            getattr(target, path).CopyFrom(getattr(source, path))
        else:
            target.ClearField(path)
    else:
        setattr(target, path, getattr(source, path))
