"""All Pub/Sub resources: topics, subscriptions, snapshots; publishing, caps, seek.

Everything runs on the event loop's thread (the gRPC and HTTP servers, push
and timers share it), so there are no locks: each operation is a few
microseconds of dict work and never waits. Delivery itself — leases, backoff,
ordering keys, who gets what — lives in :mod:`.delivery`, one per subscription.

Memory is bounded per *holder*: each subscription (backlog, outstanding and
retained acked messages) and each snapshot (the messages it would restore)
may hold at most ``Caps.messages`` messages and ``Caps.bytes`` bytes. A message
object is shared by all holders, so the real total is at most the sum.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ._types import pubsub
from .delivery import Delivery, Entry, Msg, is_ack_id
from .errors import ApiError, Code
from .filters import FilterError, Predicate, compile_filter
from .limits import check_publish, check_retention, check_retry_policy
from .names import check_name

__all__ = ["DELETED_TOPIC", "Caps", "PushHook", "Snap", "State", "StreamHandle", "Sub", "Topic", "check_ack_ids",
           "exactly_once_error_info", "pb"]

log = logging.getLogger("cloudclients_emulator")

DELETED_TOPIC = "_deleted-topic_"
DEFAULT_ACK_DEADLINE = 10
MIN_ACK_DEADLINE, MAX_ACK_DEADLINE = 10, 600
SNAPSHOT_LIFETIME_S = 7 * 24 * 3600


class _PB:
    """The raw protobuf classes of google.pubsub.v1 (faster than proto-plus wrappers)."""

    Topic: Any = pubsub.Topic.pb()
    Subscription: Any = pubsub.Subscription.pb()
    PubsubMessage: Any = pubsub.PubsubMessage.pb()
    ReceivedMessage: Any = pubsub.ReceivedMessage.pb()
    Snapshot: Any = pubsub.Snapshot.pb()


pb = _PB


@dataclass(frozen=True)
class Caps:
    """Memory bounds per holder (a subscription or a snapshot)."""

    messages: int = 1_000_000
    bytes: int = 1 << 30


class StreamHandle(Protocol):
    """An open StreamingPull, as the state sees it."""

    sub: Sub | None

    def end(self, code: Code, message: str) -> None:
        """End the stream with this status (the client reconnects on UNAVAILABLE)."""
        ...


class PushHook(Protocol):
    """Push delivery, told when a subscription's push endpoint may have changed."""

    def update(self, sub: Sub) -> None: ...

    def remove(self, sub: Sub) -> None: ...


class Topic:
    __slots__ = ("iam_policy", "name", "pb", "snaps", "subs")

    def __init__(self, topic_pb: Any) -> None:
        self.pb = topic_pb
        self.iam_policy: Any = None  # google.iam.v1.Policy, once set (iam.py); dropped with the topic
        self.name: str = topic_pb.name
        self.subs: dict[str, Sub] = {}
        self.snaps: dict[str, Snap] = {}


class Sub:
    """A subscription: its settings (the protobuf), filter and delivery."""

    def __init__(self, state: State, sub_pb: Any, predicate: Predicate | None) -> None:
        self.state = state
        self.pb = sub_pb
        self.name: str = sub_pb.name
        self.predicate = predicate
        self.detached = False
        self.iam_policy: Any = None  # google.iam.v1.Policy, once set (iam.py)
        self.delivery = Delivery(state.loop, self, ordered=bool(sub_pb.enable_message_ordering),
                                 retain=bool(sub_pb.retain_acked_messages))
        self.settings_changed()

    def settings_changed(self) -> None:
        """Re-read the settings delivery uses on every message."""
        p = self.pb
        self.ack_deadline = float(p.ack_deadline_seconds)
        dlp = p.dead_letter_policy
        self._max_attempts = (dlp.max_delivery_attempts or 5) if p.HasField("dead_letter_policy") and \
            dlp.dead_letter_topic else 0
        self._retry: tuple[float, float] | None = None
        if p.HasField("retry_policy"):
            self._retry = (p.retry_policy.minimum_backoff.ToTimedelta().total_seconds() or 10.0,
                           p.retry_policy.maximum_backoff.ToTimedelta().total_seconds() or 600.0)
        self.delivery.set_retain(bool(p.retain_acked_messages))

    @property
    def exactly_once(self) -> bool:
        return bool(self.pb.enable_exactly_once_delivery)

    def ack_results(self, invalid: list[str]) -> None:
        """Report ack ids an Acknowledge or ModifyAckDeadline found no lease for.

        Plain subscriptions ignore them (acks are best effort). With exactly-once
        delivery the service fails the call and names each one in a
        ``google.rpc.ErrorInfo``'s metadata, which the client library turns into
        the result of ``ack_with_response()`` / ``modify_ack_deadline_with_response()``.
        """
        if invalid and self.exactly_once:
            listed = _listable(invalid)
            message = ("Some acknowledgement ids in the request were invalid. This could be because the "
                       "acknowledgement ids have expired or the acknowledgement ids were malformed.")
            if len(listed) < len(invalid):
                message += (f" {len(invalid) - len(listed)} more invalid acknowledgement ids are not listed in "
                            f"the error details (only {len(listed)} fit in gRPC's metadata size limit).")
            raise ApiError(Code.INVALID_ARGUMENT, message, (exactly_once_error_info(listed),))

    # -- delivery.Policy ----------------------------------------------------------------

    def max_attempts(self) -> int:
        return self._max_attempts

    def backoff(self, attempts: int) -> float:
        if self._retry is None:
            return 0.0
        low, high = self._retry
        return float(min(high, low * (2 ** max(attempts - 1, 0))))

    def dead_letter(self, entry: Entry) -> None:
        self.state.dead_letter(self, entry)


class Snap:
    """A snapshot: the source's unacked messages when taken, plus everything published since."""

    __slots__ = ("bytes", "iam_policy", "msgs", "pb", "taken_ns")

    def __init__(self, snap_pb: Any, msgs: Iterable[Msg]) -> None:
        self.pb = snap_pb
        self.iam_policy: Any = None  # google.iam.v1.Policy, once set (iam.py)
        self.msgs: dict[int, Msg] = {m.seq: m for m in msgs}
        self.bytes = sum(len(m.raw) for m in self.msgs.values())
        self.taken_ns = time.time_ns()

    def add(self, msgs: Iterable[Msg]) -> None:
        for m in msgs:
            self.msgs[m.seq] = m
            self.bytes += len(m.raw)


class State:
    """The emulator's data and every operation on it (call on the event loop's thread only)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, caps: Caps | None = None) -> None:
        self.loop = loop
        self.caps = caps or Caps()
        self.push: PushHook | None = None
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self.topics: dict[str, Topic] = {}
        self.subs: dict[str, Sub] = {}
        self.snaps: dict[str, Snap] = {}
        self.streams: dict[int, StreamHandle] = {}

    def reset(self) -> None:
        """Forget everything; open streams end with UNAVAILABLE so clients reconnect."""
        self.break_streams(Code.UNAVAILABLE)
        for sub in self.subs.values():
            self._close_sub(sub)
        self.topics.clear()
        self.subs.clear()
        self.snaps.clear()

    # -- lookups ------------------------------------------------------------------------

    def topic(self, name: str) -> Topic:
        return _find(self.topics, name, "topics", "Topic not found")

    def sub(self, name: str) -> Sub:
        return _find(self.subs, name, "subscriptions", "Subscription does not exist")

    def _snap(self, name: str) -> Snap:
        return _find(self.snaps, name, "snapshots", "Snapshot does not exist")

    # -- topics -------------------------------------------------------------------------

    def create_topic(self, topic: Any) -> Any:
        check_name(topic.name, "topics")
        check_retention(topic)
        if topic.name in self.topics:
            raise ApiError(Code.ALREADY_EXISTS, f"Topic already exists: {topic.name}")
        stored = pb.Topic()
        stored.CopyFrom(topic)
        self.topics[topic.name] = Topic(stored)
        return stored

    def update_topic(self, topic: Any, paths: Iterable[str]) -> Any:
        current = self.topic(topic.name).pb
        paths = list(paths)
        if not paths:
            raise ApiError(Code.INVALID_ARGUMENT, "update_mask must name at least one field")
        updated = pb.Topic()
        updated.CopyFrom(current)
        for path in paths:
            if path == "name" or path not in pb.Topic.DESCRIPTOR.fields_by_name:
                raise ApiError(Code.INVALID_ARGUMENT, f"Invalid update_mask path: {path}")
            _copy_field(topic, updated, path)
        check_retention(updated)  # before anything changes: a refused update leaves the topic as it was
        current.CopyFrom(updated)
        return current

    def list_topics(self, project: str) -> list[Any]:
        prefix = f"{project}/topics/"
        return [t.pb for n, t in sorted(self.topics.items()) if n.startswith(prefix)]

    def topic_subscriptions(self, name: str) -> list[str]:
        return sorted(self.topic(name).subs)

    def topic_snapshots(self, name: str) -> list[str]:
        return sorted(self.topic(name).snaps)

    def delete_topic(self, name: str) -> None:
        topic = self.topic(name)
        del self.topics[name]
        for sub in topic.subs.values():
            sub.pb.topic = DELETED_TOPIC

    def publish(self, request: Any) -> list[str]:
        """Stamp, store and route the request's messages; return their ids (in request order).

        :raises ApiError: the service's limits (INVALID_ARGUMENT), a missing
            topic (NOT_FOUND), or a full subscription or snapshot
            (RESOURCE_EXHAUSTED, and a WARNING: nothing is dropped silently).
        """
        topic = self.topic(request.topic)
        messages = request.messages
        check_publish(messages, request.ByteSize())
        now_ns = time.time_ns()
        seconds, nanos = divmod(now_ns, 1_000_000_000)
        msgs: list[Msg] = []
        ids: list[str] = []
        for message in messages:  # the request is ours (parsed for this call): stamped in place
            message_id = str(next(self._ids))
            message.message_id = message_id
            stamp = message.publish_time
            stamp.seconds, stamp.nanos = seconds, nanos
            msgs.append(Msg(next(self._seq), message_id, message.ordering_key, now_ns, message.SerializeToString()))
            ids.append(message_id)
        routes: list[tuple[Sub, list[Msg]]] = []
        for sub in topic.subs.values():
            if sub.detached:
                continue
            predicate = sub.predicate
            # Filtered out: acknowledged on the subscriber's behalf, as by the service.
            kept = msgs if predicate is None else [m for m, p in zip(msgs, messages, strict=True)
                                                   if predicate(p.attributes)]
            if kept:
                self._check_room(sub, kept)
                routes.append((sub, kept))
        for snap_name, snap in topic.snaps.items():
            self._check_cap(f"snapshot {snap_name}", len(snap.msgs), snap.bytes, msgs,
                            "Delete the snapshot, or raise the caps.")
        # Every holder can take its messages: only now is anything evicted (a refused Publish changes nothing).
        for sub, kept in routes:
            self._make_room(sub, kept)
            sub.delivery.add(kept)
        for snap in topic.snaps.values():
            snap.add(msgs)
        return ids

    def _check_room(self, sub: Sub, msgs: list[Msg]) -> None:
        """Refuse the publish if *sub* cannot hold *msgs*, even with its retained acked messages evicted."""
        delivery, caps = sub.delivery, self.caps
        added = sum(len(m.raw) for m in msgs)
        if not delivery.can_fit(caps.messages - len(msgs), caps.bytes - added):
            self._check_cap(f"subscription {sub.name}", len(delivery.entries), delivery.held_bytes, msgs,
                            "Ack messages, or raise the caps.")

    def _make_room(self, sub: Sub, msgs: list[Msg]) -> None:
        """Evict *sub*'s oldest retained acked messages until *msgs* fit (checked by :meth:`_check_room`)."""
        delivery, caps = sub.delivery, self.caps
        added = sum(len(m.raw) for m in msgs)
        if len(delivery.entries) + len(msgs) > caps.messages or delivery.held_bytes + added > caps.bytes:
            delivery.evict_retained(caps.messages - len(msgs), caps.bytes - added)

    def _check_cap(self, holder: str, count: int, size: int, msgs: list[Msg], advice: str) -> None:
        caps = self.caps
        if count + len(msgs) <= caps.messages and size + sum(len(m.raw) for m in msgs) <= caps.bytes:
            return
        log.warning("%s is full (%d messages, %d bytes; caps %d messages, %d bytes): "
                    "refusing Publish with RESOURCE_EXHAUSTED. %s", holder, count, size, caps.messages, caps.bytes,
                    advice)
        raise ApiError(Code.RESOURCE_EXHAUSTED,
                       f"{holder[0].upper()}{holder[1:]} holds {count} messages / {size} bytes; the emulator's cap is "
                       f"{caps.messages} messages / {caps.bytes} bytes")

    def dead_letter(self, sub: Sub, entry: Entry) -> None:
        """Forward a message that ran out of delivery attempts to the dead-letter topic."""
        topic = self.topics.get(sub.pb.dead_letter_policy.dead_letter_topic)
        if topic is None:
            log.warning("dead-letter topic %s of %s does not exist: message %s dropped",
                        sub.pb.dead_letter_policy.dead_letter_topic, sub.name, entry.msg.message_id)
            return
        copy = pb.PubsubMessage.FromString(entry.msg.raw)
        source_publish_time = copy.publish_time.ToJsonString()  # before the copy gets its own
        message_id = str(next(self._ids))
        now_ns = time.time_ns()
        copy.message_id = message_id
        copy.publish_time.FromNanoseconds(now_ns)
        # The attributes the service adds to forwarded messages.
        copy.attributes["CloudPubSubDeadLetterSourceSubscription"] = sub.name.rsplit("/", 1)[1]
        copy.attributes["CloudPubSubDeadLetterSourceSubscriptionProject"] = sub.name.split("/")[1]
        copy.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] = str(entry.attempts)
        copy.attributes["CloudPubSubDeadLetterSourceTopicPublishTime"] = source_publish_time
        msg = Msg(next(self._seq), message_id, copy.ordering_key, now_ns, copy.SerializeToString())
        # Forwarded whatever the caps (the source was within them): a warning says when a target is over.
        for target in topic.subs.values():
            if target.detached or (target.predicate is not None and not target.predicate(copy.attributes)):
                continue
            target.delivery.add((msg,))
            if len(target.delivery.entries) > self.caps.messages or target.delivery.held_bytes > self.caps.bytes:
                log.warning("dead-letter subscription %s is over the caps after forwarding message %s",
                            target.name, message_id)
        for snap in topic.snaps.values():
            snap.add((msg,))

    # -- subscriptions --------------------------------------------------------------------

    def create_subscription(self, request: Any) -> Any:
        check_name(request.name, "subscriptions")
        if request.name in self.subs:
            raise ApiError(Code.ALREADY_EXISTS, f"Subscription already exists: {request.name}")
        topic = self.topic(request.topic)
        sub_pb = pb.Subscription()
        sub_pb.CopyFrom(request)
        _normalise_subscription(sub_pb)
        predicate = _compile(sub_pb.filter)
        if sub_pb.HasField("dead_letter_policy") and sub_pb.dead_letter_policy.dead_letter_topic:
            self.topic(sub_pb.dead_letter_policy.dead_letter_topic)
        sub = Sub(self, sub_pb, predicate)
        self.subs[sub.name] = sub
        topic.subs[sub.name] = sub
        if self.push is not None:
            self.push.update(sub)
        return sub_pb

    def update_subscription(self, subscription: Any, paths: Iterable[str]) -> Any:
        sub = self.sub(subscription.name)
        paths = list(paths)
        if not paths:
            raise ApiError(Code.INVALID_ARGUMENT, "update_mask must name at least one field")
        # Applied to a copy and validated whole: a refused update changes nothing.
        updated = pb.Subscription()
        updated.CopyFrom(sub.pb)
        for path in paths:
            top = path.split(".")[0]
            if top in ("name", "topic", "filter", "enable_message_ordering"):
                raise ApiError(Code.INVALID_ARGUMENT, f"Field {path} cannot be updated")
            if top not in pb.Subscription.DESCRIPTOR.fields_by_name:
                raise ApiError(Code.INVALID_ARGUMENT, f"Invalid update_mask path: {path}")
            _copy_field(subscription, updated, top)
        _normalise_subscription(updated)
        if updated.HasField("dead_letter_policy") and updated.dead_letter_policy.dead_letter_topic:
            self.topic(updated.dead_letter_policy.dead_letter_topic)
        sub.pb.CopyFrom(updated)
        sub.settings_changed()
        if self.push is not None:
            self.push.update(sub)
        return sub.pb

    def list_subscriptions(self, project: str) -> list[Any]:
        prefix = f"{project}/subscriptions/"
        return [s.pb for n, s in sorted(self.subs.items()) if n.startswith(prefix)]

    def delete_subscription(self, name: str) -> None:
        sub = self.sub(name)
        del self.subs[name]
        topic = self.topics.get(sub.pb.topic)
        if topic is not None and topic.subs.get(name) is sub:
            del topic.subs[name]
        self._end_streams(sub, Code.NOT_FOUND, f"Subscription does not exist: {name}")
        self._close_sub(sub)

    def detach_subscription(self, name: str) -> None:
        sub = self.sub(name)
        sub.detached = True
        sub.pb.detached = True
        self._end_streams(sub, Code.FAILED_PRECONDITION, f"Subscription {name} is detached")
        if self.push is not None:
            self.push.remove(sub)
        sub.delivery.reset(())

    def _close_sub(self, sub: Sub) -> None:
        if self.push is not None:
            self.push.remove(sub)
        sub.delivery.close()

    def modify_push_config(self, name: str, push_config: Any) -> None:
        sub = self.sub(name)
        sub.pb.push_config.CopyFrom(push_config)
        if self.push is not None:
            self.push.update(sub)

    # -- pulling ------------------------------------------------------------------------------

    def pullable(self, name: str) -> Sub:
        """The subscription, if messages may be pulled from it."""
        sub = self.sub(name)
        if sub.detached:
            raise ApiError(Code.FAILED_PRECONDITION, f"Subscription {name} is detached")
        return sub

    def acknowledge(self, name: str, ack_ids: Sequence[str]) -> None:
        """The unary Acknowledge (StreamingPull acks go to the delivery directly)."""
        check_ack_ids(ack_ids, required=True)
        sub = self.sub(name)
        sub.ack_results(sub.delivery.ack(list(ack_ids)))

    def modify_ack_deadline(self, name: str, ack_ids: Sequence[str], seconds: int) -> None:
        """The unary ModifyAckDeadline."""
        check_ack_ids(ack_ids, required=True)
        if not 0 <= seconds <= MAX_ACK_DEADLINE:
            raise ApiError(Code.INVALID_ARGUMENT,
                           f"Invalid ack deadline: {seconds}; it must be between 0 and {MAX_ACK_DEADLINE} seconds")
        sub = self.sub(name)
        sub.ack_results(sub.delivery.modify(list(ack_ids), seconds))

    # -- streams ------------------------------------------------------------------------------

    def add_stream(self, stream: StreamHandle) -> int:
        stream_id = next(self._stream_ids)
        self.streams[stream_id] = stream
        return stream_id

    def remove_stream(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)

    def break_streams(self, code: Code) -> int:
        """End every open StreamingPull with *code*; return how many there were."""
        streams = list(self.streams.values())
        for stream in streams:
            stream.end(code, "The server closed the stream; reconnect")
        return len(streams)

    def _end_streams(self, sub: Sub, code: Code, message: str) -> None:
        for stream in [s for s in self.streams.values() if s.sub is sub]:
            stream.end(code, message)

    # -- snapshots and seek -------------------------------------------------------------------

    def create_snapshot(self, name: str, sub_name: str, labels: dict[str, str]) -> Any:
        check_name(name, "snapshots")
        if name in self.snaps:
            raise ApiError(Code.ALREADY_EXISTS, f"Snapshot already exists: {name}")
        sub = self.sub(sub_name)
        topic = self.topics.get(sub.pb.topic)
        if topic is None:
            raise ApiError(Code.FAILED_PRECONDITION, f"The topic of {sub_name} was deleted")
        unacked = sub.delivery.unacked()
        self._check_cap(f"snapshot {name}", 0, 0, unacked, "Ack messages, or raise the caps.")
        snap_pb = pb.Snapshot(name=name, topic=topic.name, labels=labels)
        snap_pb.expire_time.FromSeconds(int(time.time()) + SNAPSHOT_LIFETIME_S)
        snap = Snap(snap_pb, unacked)
        self.snaps[name] = snap
        topic.snaps[name] = snap
        return snap_pb

    def get_snapshot(self, name: str) -> Any:
        return self._snap(name).pb

    def update_snapshot(self, snapshot: Any, paths: Iterable[str]) -> Any:
        snap = self._snap(snapshot.name)
        paths = list(paths)
        if not paths:
            raise ApiError(Code.INVALID_ARGUMENT, "update_mask must name at least one field")
        for path in paths:
            if path not in ("labels", "expire_time"):
                raise ApiError(Code.INVALID_ARGUMENT, f"Invalid update_mask path: {path}")
            _copy_field(snapshot, snap.pb, path)
        return snap.pb

    def list_snapshots(self, project: str) -> list[Any]:
        prefix = f"{project}/snapshots/"
        return [s.pb for n, s in sorted(self.snaps.items()) if n.startswith(prefix)]

    def delete_snapshot(self, name: str) -> None:
        snap = self._snap(name)
        del self.snaps[name]
        topic = self.topics.get(snap.pb.topic)
        if topic is not None:
            topic.snaps.pop(name, None)

    def seek(self, sub_name: str, *, time_ns: int | None = None, snapshot: str | None = None) -> None:
        """Seek to a snapshot (its messages are unacked again) or a time (published after it: unacked)."""
        sub = self.sub(sub_name)
        held = sub.delivery.history()
        if snapshot is not None:
            snap = self._snap(snapshot)
            if snap.pb.topic != sub.pb.topic:
                raise ApiError(Code.FAILED_PRECONDITION, f"Snapshot {snapshot} is for another topic than {sub_name}")
            restore = list(snap.msgs.values())
            if sub.predicate is not None:
                predicate = sub.predicate
                restore = [m for m in restore if predicate(pb.PubsubMessage.FromString(m.raw).attributes)]
            acked = [e.msg for e in held if e.msg.seq not in snap.msgs]
        else:
            target = time_ns or 0
            restore = [e.msg for e in held if e.msg.publish_ns >= target]
            acked = [e.msg for e in held if e.msg.publish_ns < target]
        self._check_cap(f"subscription {sub_name}", 0, 0, restore, "Seek to a later point, or raise the caps.")
        sub.delivery.reset(restore, acked)

    # -- reporting ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What is held, per subscription and snapshot (``bytes``: serialised message sizes)."""
        subs = {}
        for name, sub in sorted(self.subs.items()):
            d = sub.delivery
            subs[name] = {"backlog": d.backlog, "outstanding": len(d.leases), "retained": len(d.retained),
                          "messages": len(d.entries), "bytes": d.held_bytes}
        snaps = {name: {"messages": len(s.msgs), "bytes": s.bytes} for name, s in sorted(self.snaps.items())}
        return {
            "topics": len(self.topics),
            "subscriptions": subs,
            "snapshots": snaps,
            "open_streams": len(self.streams),
            "held": {"messages": sum(s["messages"] for s in subs.values()) +
                                 sum(s["messages"] for s in snaps.values()),
                     "bytes": sum(s["bytes"] for s in subs.values()) + sum(s["bytes"] for s in snaps.values())},
            "caps": {"messages_per_holder": self.caps.messages, "bytes_per_holder": self.caps.bytes},
        }


def check_ack_ids(ack_ids: Sequence[str], *, required: bool = False) -> None:
    """Refuse ack ids this emulator cannot have handed out, as the service does; with *required*
    (the unary Acknowledge and ModifyAckDeadline), refuse an empty list too.

    A well-formed ack id that is unknown or expired is not an error here: the service ignores it
    (or, with exactly-once delivery, reports it per ack id).
    """
    if required and not ack_ids:
        raise ApiError(Code.INVALID_ARGUMENT, "You have not specified an ack ID in the request.")
    for ack_id in ack_ids:
        if not is_ack_id(ack_id):
            raise ApiError(Code.INVALID_ARGUMENT,
                           f"You have passed an invalid ack ID to the service (ack_id={ack_id}).")


#: Bytes of ErrorInfo metadata (serialised ack id -> reason entries) one exactly-once ack error may
#: carry. It goes base64-encoded in the ``grpc-status-details-bin`` trailer, and gRPC clients refuse
#: trailers over 8 KiB by default (randomly from 8 KiB, always from 16 KiB: the client then sees
#: RESOURCE_EXHAUSTED, which google-cloud-pubsub retries for ever). 4.5 KiB of entries (about 95 of
#: this emulator's ack ids) make a trailer of about 6.5 KiB.
ERROR_INFO_BUDGET = 4608
_REASON = "PERMANENT_FAILURE_INVALID_ACK_ID"


def _listable(invalid: Sequence[str]) -> list[str]:
    """The first of *invalid* whose ErrorInfo entries fit :data:`ERROR_INFO_BUDGET`.

    The client resolves a listed ack id as INVALID_ACK_ID, and one left out
    as failed too (``AcknowledgeStatus.OTHER``, from the call's status), so
    every ``ack_with_response()`` future still gets a result.
    """
    used = 0
    for count, ack_id in enumerate(invalid):
        used += len(ack_id) + len(_REASON) + 8  # map entry framing: tags and lengths, at most 8 bytes
        if used > ERROR_INFO_BUDGET:
            return list(invalid[:count])
    return list(invalid)


def exactly_once_error_info(invalid: Iterable[str]) -> Any:
    """The ``google.rpc.ErrorInfo`` the service sends with a failed ack or modack under exactly-once
    delivery: each refused ack id mapped to why."""
    from google.rpc import error_details_pb2

    return error_details_pb2.ErrorInfo(reason="EXACTLY_ONCE_ACKID_FAILURE", domain="pubsub.googleapis.com",
                                       metadata=dict.fromkeys(invalid, _REASON))


def _compile(text: str) -> Predicate | None:
    try:
        return compile_filter(text)
    except FilterError as exc:
        raise ApiError(Code.INVALID_ARGUMENT, f"Invalid filter: {exc}") from None


def _normalise_subscription(sub: Any) -> None:
    if sub.ack_deadline_seconds == 0:
        sub.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
    if not MIN_ACK_DEADLINE <= sub.ack_deadline_seconds <= MAX_ACK_DEADLINE:
        raise ApiError(
            Code.INVALID_ARGUMENT,
            f"Invalid ack_deadline_seconds: {sub.ack_deadline_seconds}; it must be between "
            f"{MIN_ACK_DEADLINE} and {MAX_ACK_DEADLINE}",
        )
    if sub.HasField("dead_letter_policy") and sub.dead_letter_policy.dead_letter_topic:
        attempts = sub.dead_letter_policy.max_delivery_attempts or 5
        if not 5 <= attempts <= 100:
            raise ApiError(Code.INVALID_ARGUMENT,
                           f"Invalid max_delivery_attempts: {attempts}; it must be between 5 and 100")
        sub.dead_letter_policy.max_delivery_attempts = attempts
    check_retention(sub)
    check_retry_policy(sub)
    if not sub.HasField("message_retention_duration"):
        sub.message_retention_duration.FromSeconds(7 * 24 * 3600)  # the service's default
    sub.state = int(pubsub.Subscription.State.ACTIVE)


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


_Found = TypeVar("_Found")


def _find(table: dict[str, _Found], name: str, collection: str, missing: str) -> _Found:
    """``table[name]``; else INVALID_ARGUMENT for a malformed name of *collection*, or NOT_FOUND
    ``"<missing>: <name>"`` (the service's wording, which differs per collection)."""
    found = table.get(name)
    if found is None:
        check_name(name, collection)
        raise ApiError(Code.NOT_FOUND, f"{missing}: {name}")
    return found
