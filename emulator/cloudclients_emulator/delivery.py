"""Delivery for one subscription: ready messages, backoff, ordering keys, leases, waiting consumers.

Everything runs on the event loop's thread, so nothing here locks. The costs
that matter under load are bounded by what changes, never by what is held:

- a published message is appended to ``ready`` (or to its ordering key's
  queue) and, if someone is waiting *on this subscription*, one dispatch is
  scheduled; no other subscription or stream is woken;
- leases sit in a dict (ack, modack: O(1)) and in a deadline heap, with one
  loop timer per subscription armed for the earliest deadline; a modack
  pushes a new heap entry and the stale one is skipped when it surfaces;
- backed-off messages wait in a second heap on the same timer;
- consumers (StreamingPull streams, waiting Pulls, push) that have room wait
  in an ordered set; a dispatch hands each its batch in turn, so a publish
  wakes at most the consumers it feeds.

Leases belong to the subscription, not to the stream that received them: a
lease's ``consumer`` only says whose flow control it counts against. When a
stream closes its leases stay, counted against nobody, until they are acked,
nacked or expire, as the service keeps ack ids valid until their deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import re
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from .limits import MAX_PULL_MESSAGES, MAX_RESPONSE_BYTES

__all__ = ["ACKED", "DELAYED", "LEASED", "QUEUED", "READY", "Consumer", "Delivery", "Entry", "Lease", "Msg", "Policy",
           "is_ack_id"]

READY, DELAYED, QUEUED, LEASED, ACKED = range(5)

#: Under load a subscription's StreamingPull streams get a batch at most this
#: often, so many small publishes become a few larger responses: each response
#: costs the client a receipt ModifyAckDeadline call and an Acknowledge. The
#: first message after a quiet spell goes out at once, and a waiting unary Pull
#: or a free push slot is served at once too (they cost no extra calls).
#: Measured on the capped mix: 5 ms -> 10 ms -> 20 ms cut the client's calls
#: per message by about 15 % a step and the emulator's CPU per message by about
#: 10 % a step.
DISPATCH_INTERVAL = 0.02

_ACK_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}-[0-9]{1,20}")


def is_ack_id(ack_id: str) -> bool:
    """Whether *ack_id* has the form of one this emulator hands out (``serial-seq-attempt``).

    The service refuses an ack id it cannot decode with INVALID_ARGUMENT, and
    ignores (or, with exactly-once delivery, reports) a well-formed one that
    is no longer leased.
    """
    return _ACK_ID.fullmatch(ack_id) is not None


#: Bytes a received message adds to a response beyond its own (ack id, framing).
RESPONSE_OVERHEAD = 48


class Msg:
    """A published message: serialised once, shared by every subscription and snapshot that holds it.

    A parsed ``PubsubMessage`` costs about 930 bytes of memory for a 100-byte
    payload, its serialised form about 180.
    """

    __slots__ = ("message_id", "ordering_key", "publish_ns", "raw", "seq")

    def __init__(self, seq: int, message_id: str, ordering_key: str, publish_ns: int, raw: bytes) -> None:
        self.seq = seq  # publish order, unique across the emulator
        self.message_id = message_id
        self.ordering_key = ordering_key
        self.publish_ns = publish_ns
        self.raw = raw

    @property
    def size(self) -> int:
        return len(self.raw)


class Entry:
    """One message as held by one subscription."""

    __slots__ = ("attempts", "msg", "state")

    def __init__(self, msg: Msg) -> None:
        self.msg = msg
        self.attempts = 0
        self.state = READY


class Lease:
    """A delivered, not yet acknowledged message (its ack id is the key)."""

    __slots__ = ("ack_id", "consumer", "deadline", "entry")

    def __init__(self, ack_id: str, entry: Entry, deadline: float, consumer: Consumer | None) -> None:
        self.ack_id = ack_id
        self.entry = entry
        self.deadline = deadline
        self.consumer = consumer


class Consumer:
    """Something messages are handed to: a StreamingPull stream, a waiting Pull, push delivery."""

    #: Seconds a lease taken by this consumer lasts (``math.inf``: until released).
    ack_deadline: float = 10.0
    #: Served at most every :data:`DISPATCH_INTERVAL` under load (StreamingPull);
    #: otherwise as soon as there are messages.
    paced: bool = False

    def room(self) -> tuple[int, int]:
        """Messages and bytes this consumer may take now."""
        raise NotImplementedError

    def deliver(self, leases: list[Lease]) -> None:
        """Take these (already leased) messages."""
        raise NotImplementedError

    def released(self, lease: Lease) -> None:
        """A lease counted against this consumer ended (ack, nack, expiry, seek)."""


class Policy(Protocol):
    """What the subscription's settings decide (read at each use, so updates apply at once)."""

    def max_attempts(self) -> int:
        """Deliveries before dead-lettering; 0: no dead-letter policy."""
        ...

    def backoff(self, attempts: int) -> float:
        """Seconds before a nacked or expired message is redelivered."""
        ...

    def dead_letter(self, entry: Entry) -> None:
        """Forward a message out of attempts (it is already finished here)."""
        ...


class Delivery:
    """The messages one subscription holds and hands out."""

    _serials = itertools.count(1)

    def __init__(self, loop: asyncio.AbstractEventLoop, policy: Policy, *, ordered: bool, retain: bool) -> None:
        self.loop = loop
        self.policy = policy
        self.ordered = ordered
        self.retain = retain
        self._serial = next(self._serials)  # in ack ids: a recreated subscription never honours old ones
        self._counter = itertools.count()
        self.entries: dict[int, Entry] = {}  # everything held (unacked and retained acked), by seq
        self.held_bytes = 0
        self.ready: deque[Entry] = deque()
        self.retained: deque[Entry] = deque()  # acked, kept for seek (oldest first)
        self._delayed: list[tuple[float, int, Entry]] = []
        self._keys: dict[str, deque[Entry]] = {}  # ordering key -> its messages; the head is out
        self.leases: dict[str, Lease] = {}
        self._lease_heap: list[tuple[float, int, Lease]] = []
        self.waiting: dict[Consumer, None] = {}  # consumers with room, in turn order
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._dispatch_handle: asyncio.Handle | None = None
        self._dispatch_soon = False  # the scheduled dispatch runs at once (not paced)
        self._last_dispatch = -math.inf
        self._unpaced_waiting = 0

    # -- what is held ----------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Messages waiting for delivery (ready, backed off, or behind their ordering key)."""
        return len(self.entries) - len(self.leases) - len(self.retained)

    def unacked(self) -> list[Msg]:
        return [e.msg for e in self.entries.values() if e.state != ACKED]

    def history(self) -> list[Entry]:
        """Everything held, in publish order."""
        return list(self.entries.values())

    def add(self, msgs: Iterable[Msg]) -> None:
        """New messages for this subscription."""
        entries, ready, keys = self.entries, self.ready, self._keys
        for msg in msgs:
            entry = Entry(msg)
            entries[msg.seq] = entry
            self.held_bytes += len(msg.raw)
            key = msg.ordering_key
            if key and self.ordered:
                queue = keys.get(key)
                if queue is None:
                    keys[key] = deque((entry,))
                else:
                    queue.append(entry)
                    entry.state = QUEUED
                    continue
            ready.append(entry)
        self._schedule()

    def can_fit(self, max_messages: int, max_bytes: int) -> bool:
        """Whether evicting acked messages kept for seek (oldest first) would bring the holdings within
        the bounds; evicts nothing. Costs what :meth:`evict_retained` would evict."""
        count, size = len(self.entries), self.held_bytes
        for entry in self.retained:
            if count <= max_messages and size <= max_bytes:
                break
            count -= 1
            size -= len(entry.msg.raw)
        return count <= max_messages and size <= max_bytes

    def evict_retained(self, max_messages: int, max_bytes: int) -> None:
        """Drop the oldest acked messages kept for seek until the holdings fit the bounds."""
        while self.retained and (len(self.entries) > max_messages or self.held_bytes > max_bytes):
            entry = self.retained.popleft()
            del self.entries[entry.msg.seq]
            self.held_bytes -= len(entry.msg.raw)

    def reset(self, unacked: Iterable[Msg], acked: Iterable[Msg] = ()) -> None:
        """Replace everything (seek, detach): leases end, *unacked* is delivered afresh, *acked* retained."""
        self._drop_leases()
        self.entries.clear()
        self.ready.clear()
        self.retained.clear()
        self._delayed.clear()
        self._keys.clear()
        self.held_bytes = 0
        kept = sorted([(m, False) for m in unacked] + [(m, True) for m in acked if self.retain],
                      key=lambda pair: pair[0].seq)
        for msg, is_acked in kept:
            if is_acked:
                entry = Entry(msg)
                entry.state = ACKED
                self.entries[msg.seq] = entry
                self.held_bytes += len(msg.raw)
                self.retained.append(entry)
            else:
                self.add((msg,))

    def set_retain(self, retain: bool) -> None:
        self.retain = retain
        if not retain:
            while self.retained:
                entry = self.retained.popleft()
                del self.entries[entry.msg.seq]
                self.held_bytes -= len(entry.msg.raw)

    def close(self) -> None:
        """The subscription is gone: drop everything and stop the timers."""
        self.reset(())
        self.waiting.clear()
        self._unpaced_waiting = 0
        for handle in (self._timer, self._dispatch_handle):
            if handle is not None:
                handle.cancel()
        self._timer = self._dispatch_handle = None
        self._timer_at = math.inf

    def _drop_leases(self) -> None:
        leases = list(self.leases.values())
        self.leases.clear()
        self._lease_heap.clear()
        for lease in leases:
            if lease.consumer is not None:
                lease.consumer.released(lease)

    # -- taking ------------------------------------------------------------------------

    def take(self, consumer: Consumer | None, max_messages: int, max_bytes: int, ack_deadline: float) -> list[Lease]:
        """Lease up to *max_messages* ready messages (at least one if any is ready, whatever its size).

        The batch stays within *max_bytes* and :data:`MAX_RESPONSE_BYTES`; a
        message out of delivery attempts is dead-lettered instead.
        """
        ready = self.ready
        if not ready:
            return []
        max_messages = min(max_messages, MAX_PULL_MESSAGES)
        max_bytes = min(max_bytes, MAX_RESPONSE_BYTES)
        max_attempts = self.policy.max_attempts()
        deadline = self.loop.time() + ack_deadline
        leases = self.leases
        heap = self._lease_heap
        counter = self._counter
        prefix = f"{self._serial}-"
        out: list[Lease] = []
        total = 0
        while ready and len(out) < max_messages:
            entry = ready[0]
            size = len(entry.msg.raw) + RESPONSE_OVERHEAD
            if out and total + size > max_bytes:
                break
            ready.popleft()
            if max_attempts and entry.attempts >= max_attempts:
                self._finish(entry)
                self.policy.dead_letter(entry)
                continue
            entry.attempts += 1
            entry.state = LEASED
            ack_id = f"{prefix}{entry.msg.seq}-{entry.attempts}"
            lease = Lease(ack_id, entry, deadline, consumer)
            leases[ack_id] = lease
            if deadline != math.inf:
                heapq.heappush(heap, (deadline, next(counter), lease))
            out.append(lease)
            total += size
        if out:
            self._arm(deadline)
        return out

    # -- acks, nacks, deadlines ----------------------------------------------------------------

    def ack(self, ack_ids: Iterable[str]) -> list[str]:
        """Acknowledge; return the ack ids that are not (or no longer) leased.

        Plain subscriptions ignore those, as the service does; with
        exactly-once delivery the caller reports them to the client.
        """
        leases = self.leases
        unknown: list[str] = []
        for ack_id in ack_ids:
            lease = leases.pop(ack_id, None)
            if lease is None:
                unknown.append(ack_id)
                continue
            self._finish(lease.entry)
            if lease.consumer is not None:
                lease.consumer.released(lease)
        return unknown

    def modify(self, ack_ids: Iterable[str], seconds: float) -> list[str]:
        """Set the deadline of each lease to *seconds* from now (0: nack, redelivered after backoff);
        return the ack ids that are not (or no longer) leased."""
        unknown: list[str] = []
        if seconds <= 0:
            found: list[Lease] = []
            for ack_id in ack_ids:
                lease = self.leases.get(ack_id)
                if lease is None:
                    unknown.append(ack_id)
                else:
                    found.append(lease)
            self.release(found, backoff=True)
            return unknown
        deadline = self.loop.time() + seconds
        heap, counter = self._lease_heap, self._counter
        earliest = math.inf
        for ack_id in ack_ids:
            lease = self.leases.get(ack_id)
            if lease is None:
                unknown.append(ack_id)
                continue
            lease.deadline = deadline
            heapq.heappush(heap, (deadline, next(counter), lease))
            earliest = deadline
        if len(heap) > 2 * len(self.leases) + 1024:  # stale entries from lease extensions
            self._lease_heap = [(lease.deadline, next(counter), lease) for lease in self.leases.values()
                                if lease.deadline != math.inf]
            heapq.heapify(self._lease_heap)
        self._arm(earliest)
        return unknown

    def release(self, leases: Iterable[Lease], *, backoff: bool, delay: float | None = None) -> None:
        """End these leases without an ack: the messages are delivered again (after *delay*, or the
        retry policy's backoff when *backoff*), or dead-lettered when out of attempts."""
        now = self.loop.time()
        again: list[Entry] = []
        max_attempts = self.policy.max_attempts()
        for lease in leases:
            if self.leases.pop(lease.ack_id, None) is None:
                continue
            if lease.consumer is not None:
                lease.consumer.released(lease)
            entry = lease.entry
            if max_attempts and entry.attempts >= max_attempts:
                # Out of attempts: forwarded now, as the service does, not at the next pull.
                self._finish(entry)
                self.policy.dead_letter(entry)
                continue
            wait = delay if delay is not None else (self.policy.backoff(entry.attempts) if backoff else 0.0)
            if wait > 0:
                entry.state = DELAYED
                heapq.heappush(self._delayed, (now + wait, entry.msg.seq, entry))
                self._arm(now + wait)
            else:
                entry.state = READY
                again.append(entry)
        if again:
            self.ready.extendleft(reversed(again))  # redelivered first, in their order
            self._schedule()

    def _finish(self, entry: Entry) -> None:
        """The message is done here (acked or dead-lettered): free it, or retain it for seek."""
        msg = entry.msg
        key = msg.ordering_key
        if key and self.ordered:
            queue = self._keys.get(key)
            if queue and queue[0] is entry:
                queue.popleft()
                if queue:
                    queue[0].state = READY
                    self.ready.append(queue[0])
                    self._schedule()
                else:
                    del self._keys[key]
        if self.retain:
            entry.state = ACKED
            self.retained.append(entry)
        else:
            del self.entries[msg.seq]
            self.held_bytes -= len(msg.raw)

    # -- consumers -------------------------------------------------------------------------------

    def want(self, consumer: Consumer) -> None:
        """*consumer* has room: give it messages when there are some (in turn with the others)."""
        if consumer not in self.waiting:
            self.waiting[consumer] = None
            if not consumer.paced:
                self._unpaced_waiting += 1
        self._schedule()

    def unwant(self, consumer: Consumer) -> None:
        if self.waiting.pop(consumer, 0) is None and not consumer.paced:
            self._unpaced_waiting -= 1

    def _schedule(self) -> None:
        if not self.waiting or not self.ready:
            return
        urgent = self._unpaced_waiting > 0
        if self._dispatch_handle is not None:
            if self._dispatch_soon or not urgent:
                return
            self._dispatch_handle.cancel()  # a paced dispatch, but someone unpaced waits now
        at = self._last_dispatch + DISPATCH_INTERVAL
        if urgent or at <= self.loop.time():
            self._dispatch_handle, self._dispatch_soon = self.loop.call_soon(self._dispatch), True
        else:
            self._dispatch_handle, self._dispatch_soon = self.loop.call_at(at, self._dispatch), False

    def _dispatch(self) -> None:
        self._dispatch_handle = None
        self._last_dispatch = self.loop.time()
        waiting = self.waiting
        while waiting and self.ready:
            consumer = next(iter(waiting))
            del waiting[consumer]
            if not consumer.paced:
                self._unpaced_waiting -= 1
            messages, size = consumer.room()
            if messages <= 0 or size <= 0:
                continue  # it asks again when it has room
            leases = self.take(consumer, messages, size, consumer.ack_deadline)
            if leases:
                consumer.deliver(leases)

    # -- timers ------------------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        if when >= self._timer_at or when == math.inf:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self.loop.time() + 0.001  # the loop may run a timer a hair early
        heap, leases = self._lease_heap, self.leases
        expired: list[Lease] = []
        while heap and heap[0][0] <= now:
            deadline, _, lease = heapq.heappop(heap)
            if lease.deadline == deadline and leases.get(lease.ack_id) is lease:
                expired.append(lease)
        if expired:
            self.release(expired, backoff=True)
        delayed = self._delayed
        due: list[Entry] = []
        while delayed and delayed[0][0] <= now:
            entry = heapq.heappop(delayed)[2]
            if entry.state == DELAYED:
                entry.state = READY
                due.append(entry)
        if due:
            self.ready.extendleft(reversed(due))
            self._schedule()
        while heap and (heap[0][2].deadline != heap[0][0] or leases.get(heap[0][2].ack_id) is not heap[0][2]):
            heapq.heappop(heap)  # stale: extended or ended
        nxt = min(heap[0][0] if heap else math.inf, delayed[0][0] if delayed else math.inf)
        self._arm(nxt)
