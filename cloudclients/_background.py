"""A background subscription: one streaming pull per process, with an explicit lifecycle.

Framework-free: a :class:`BackgroundSubscription` needs a registry (for the
subscriber client) and a handler. ``cloudclients.subscribe()`` (``_subscriber``)
adds the Flask app context and the start triggers.

Lifecycle (:class:`SubscriptionState`), per process::

    IDLE --start()--> RUNNING --stop()/cancel()--> STOPPING --> STOPPED
                         |                                        |
                         +--stream ends with an error--> FAILED   |
                                                           |      |
                          start() again (a new stream) <---+------+

Stopping cancels the stream (no new messages), then waits for running
handlers to finish and ack; messages leased but not yet handed to a handler
are nacked, so another worker gets them at once. ``STOPPING`` becomes
``STOPPED`` when the stream has ended, also when ``stop(timeout)`` gave up
waiting for a slow handler first.

``start()`` builds the client and resolves the name (which may ask the
metadata server) without holding the subscription's lock, so that a fork never
waits on the network for it; threads that start at once still open one stream
(the others wait for its outcome).

Fork: a process forked while a stream runs owns a *copy* of it (threads gone,
channel unusable). The subscription is a :class:`~cloudclients._fork.ProcessBound`:
in the child it forgets the copy and is ``IDLE`` again, so the child's next
start trigger opens its own stream.
"""

from __future__ import annotations

import concurrent.futures
import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

from ._fork import ProcessBound, keep_inherited
from ._message import ReceivedMessage, from_pulled
from ._registry import Registry, RegistryState

__all__ = ["BackgroundSubscription", "SubscriptionGroup", "SubscriptionState", "SubscriptionStats"]

log = logging.getLogger("cloudclients")

Handler = Callable[[ReceivedMessage], Any]


class SubscriptionState(enum.Enum):
    """Lifecycle of a :class:`BackgroundSubscription` in the current process."""

    #: Declared; no stream in this process yet (also the state in a fresh fork child).
    IDLE = "idle"
    #: A stream is open and messages are handled.
    RUNNING = "running"
    #: Cancelled; running handlers are finishing.
    STOPPING = "stopping"
    #: Stopped by :meth:`BackgroundSubscription.stop` or when the registry closed.
    STOPPED = "stopped"
    #: The stream ended by itself with an error (see ``stats()["error"]``).
    FAILED = "failed"


class SubscriptionStats(TypedDict):
    """What :meth:`BackgroundSubscription.stats` returns (JSON-serialisable)."""

    subscription: str
    pid: int
    state: str
    running: bool
    received: int
    acked: int
    nacked: int
    #: Why the stream ended on its own (``None`` unless the state is ``failed``).
    error: str | None


class BackgroundSubscription(ProcessBound):
    """One subscription consumed by a streaming pull in the current process.

    Prefer :func:`cloudclients.subscribe`, which adds the Flask app context
    and the start triggers. Created directly, it is stopped when *registry*
    closes (before the registry's clients close).

    :param subscription: the full name, ``projects/P/subscriptions/S``, or a
        function returning it (called once, when the stream first starts).
    :param handler: called with a :class:`~cloudclients.ReceivedMessage` on a
        pool thread; returning acks, raising nacks (the service redelivers).
        Delivery is at least once: handlers must tolerate duplicates.
    :param max_messages: flow control: messages leased and not yet acked or
        nacked, at most (1-100,000; default 100).
    :param max_bytes: flow control: their total size (1 KiB-1 GiB; default 100 MiB).
    :param max_lease_duration: seconds a message's lease is extended while its
        handler runs (10-86,400; default 3600).
    :param max_workers: threads running handlers (1-256; default 10).
    :param client: the registry client to pull with (default ``"subscriber"``).
    :param group: the :class:`SubscriptionGroup` that stops it (default: it
        stops itself when the registry closes).
    :raises ValueError: for an out-of-range setting (named, with the fix).
    """

    def __init__(
        self,
        registry: Registry,
        subscription: str | Callable[[], str],
        handler: Handler,
        *,
        max_messages: int = 100,
        max_bytes: int = 100 * 1024 * 1024,
        max_lease_duration: float = 3600.0,
        max_workers: int = 10,
        client: str = "subscriber",
        group: SubscriptionGroup | None = None,
    ) -> None:
        _check_int("max_messages", max_messages, 1, 100_000)
        _check_int("max_bytes", max_bytes, 1024, 1024**3)
        _check_int("max_workers", max_workers, 1, 256)
        if isinstance(max_lease_duration, bool) or not isinstance(max_lease_duration, (int, float)) or not (
            10 <= max_lease_duration <= 86_400
        ):
            raise ValueError(
                f"max_lease_duration={max_lease_duration!r} is out of range. Fix: pass seconds from 10 to 86400."
            )
        self.registry = registry
        self._subscription = subscription
        self.handler = handler
        self.flow = {"max_messages": max_messages, "max_bytes": max_bytes,
                     "max_lease_duration": float(max_lease_duration), "max_workers": max_workers}
        self.client = client
        self._lock = threading.Lock()  # guards the fields below; never held while waiting on the network
        #: Notified when a start in progress ends (started or failed).
        self._changed = threading.Condition(self._lock)
        self._state = SubscriptionState.IDLE
        self._starting = False  # a start() is building the client / opening the stream, unlocked
        self._future: Any = None
        self._counts = {"received": 0, "acked": 0, "nacked": 0}
        self._error: str | None = None
        super().__init__()  # the fork hooks may see this object from here on: its lock exists
        if group is None:
            registry.on_close(self.stop)
        else:
            group.add(self)

    @property
    def subscription(self) -> str:
        """The full subscription name (resolved on first use when given as a function)."""
        if not isinstance(self._subscription, str):
            self._subscription = self._subscription()
        return self._subscription

    # -- lifecycle ---------------------------------------------------------------

    @property
    def state(self) -> SubscriptionState:
        """Where this subscription is in its lifecycle, in this process."""
        self._checkpid()
        return self._state

    @property
    def running(self) -> bool:
        """True while this process has a live stream for the subscription."""
        return self.state is SubscriptionState.RUNNING

    def start(self) -> bool:
        """Start the streaming pull in this process, unless it already runs.

        Builds the subscriber client if needed. After :meth:`stop`, or after
        the stream failed, it opens a new stream. Threads that call it at once
        start one stream: the others wait for it and return ``False``.

        :returns: whether a stream was started by this call (``False`` if it
            was already running).
        :raises RuntimeError: while a stop is in progress, or once the
            registry is closing or closed.
        """
        self._checkpid()
        # Deferred: Google imports are slow, and a preload master never gets here.
        from ._google.subscriber import start_streaming_pull

        with self._lock:
            while self._starting:  # another thread is starting it: wait for its outcome
                self._changed.wait()
            state, registry_state = self._state, self.registry.state
            self._starting = state not in (SubscriptionState.RUNNING, SubscriptionState.STOPPING) and (
                registry_state is RegistryState.OPEN
            )
        if state is SubscriptionState.RUNNING:
            return False
        if state is SubscriptionState.STOPPING:
            raise RuntimeError(
                f"Cannot start background subscription {self.subscription!r}: it is stopping (its stream "
                "has not ended: a handler is still running). Wait until stop() returns True or the state "
                "is STOPPED, then start() again."
            )
        if registry_state is not RegistryState.OPEN:
            raise RuntimeError(
                f"Cannot start background subscription {self.subscription!r}: registry "
                f"{self.registry.name!r} is {registry_state.value}. Subscriptions do not restart "
                "after their registry closed."
            )
        # The slow part, without our lock: building the client and resolving the name may
        # ask the metadata server. A fork meanwhile must not wait for this lock (it takes
        # every object's lock in turn: holding ours while waiting for the registry's could
        # cross its order and stall the fork for its whole deadline).
        # _starting keeps a second start() (and cancel()) out until the outcome is known.
        began = time.perf_counter()
        future: Any = None
        try:
            name = self.subscription
            future = start_streaming_pull(
                self.registry.get(self.client), name, self._on_message, **self.flow  # type: ignore[arg-type]
            )
        finally:
            with self._lock:
                self._starting = False
                if future is not None:
                    self._error = None
                    self._future = future
                    self._state = SubscriptionState.RUNNING
                self._changed.notify_all()
        future.add_done_callback(self._on_stream_end)
        log.info(
            "cloudclients: background subscription %s started in pid %d (max_messages=%d, max_workers=%d, %.1f ms)",
            name, os.getpid(), self.flow["max_messages"], self.flow["max_workers"],
            (time.perf_counter() - began) * 1000,
        )
        return True

    def cancel(self) -> Any:
        """Stop receiving (non-blocking, except while a start is under way: it waits
        for that); return the stream's future to wait on, or ``None``."""
        self._checkpid()
        with self._lock:
            while self._starting:
                self._changed.wait()
            if self._state not in (SubscriptionState.RUNNING, SubscriptionState.STOPPING):
                return None  # nothing to stop in this process
            self._state = SubscriptionState.STOPPING
            future = self._future
        future.cancel()
        return future

    def stop(self, timeout: float = 10.0) -> bool:
        """Cancel the stream, then wait up to *timeout* seconds for running
        handlers to finish. Idempotent; never raises.

        :returns: whether the stream stopped within *timeout*.
        """
        return self._wait(self.cancel(), timeout)

    def stats(self) -> SubscriptionStats:
        """Counters of this process's stream (reset in a forked child)."""
        self._checkpid()
        state = self._state
        return {"subscription": self.subscription, "pid": self._pid, "state": state.value,
                "running": state is SubscriptionState.RUNNING, **self._counts,  # type: ignore[typeddict-item]
                "error": self._error}

    def __repr__(self) -> str:
        name = self._subscription if isinstance(self._subscription, str) else "(not resolved yet)"
        return f"<BackgroundSubscription {name!r} pid={self._pid} state={self._state.value}>"

    # -- internals ---------------------------------------------------------------

    def _wait(self, future: Any, timeout: float) -> bool:
        if future is None:
            return True
        began = time.perf_counter()
        stopped = True
        try:
            future.result(timeout=max(timeout, 0.0))
        except concurrent.futures.TimeoutError:
            stopped = False
        except Exception:  # the stream had failed before: already logged by _on_stream_end
            pass
        if stopped:
            with self._lock:
                if self._future is future and self._state is SubscriptionState.STOPPING:
                    self._state = SubscriptionState.STOPPED
            counts = self._counts
            log.info(
                "cloudclients: background subscription %s stopped in pid %d in %.0f ms "
                "(%d received, %d acked, %d nacked)", self.subscription, os.getpid(),
                (time.perf_counter() - began) * 1000, counts["received"], counts["acked"], counts["nacked"],
            )
        else:
            log.warning(
                "cloudclients: background subscription %s did not stop within %.1f s in pid %d: a handler is "
                "still running; its message will be redelivered", self.subscription, timeout, os.getpid(),
            )
        return stopped

    def _on_message(self, message: Any) -> None:
        received = from_pulled(message, self.subscription)
        self._bump("received")
        try:
            self.handler(received)
        except Exception:
            log.error("cloudclients: handler for %s failed on message %s; nacked, it will be redelivered",
                      self.subscription, received.message_id, exc_info=True)
            message.nack()
            self._bump("nacked")
            return
        message.ack()
        self._bump("acked")

    def _bump(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _on_stream_end(self, future: Any) -> None:
        # Runs on the stream's own thread when it ends for whatever reason.
        error: str | None = None
        if not future.cancelled():
            try:
                exc = future.exception(timeout=0)
            except Exception:  # cancelled by us: a clean stop
                exc = None
            if exc is not None:
                error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        with self._lock:
            if self._future is not future:  # an older stream, or an inherited one
                return
            failed = error is not None and self._state is SubscriptionState.RUNNING
            if self._state is SubscriptionState.STOPPING:
                # Asked to stop, and now it has, even when stop() gave up waiting
                # (a handler outlived its timeout): STOPPED, so start() works again.
                self._state = SubscriptionState.STOPPED
            elif self._state is SubscriptionState.RUNNING:
                self._state = SubscriptionState.FAILED if failed else SubscriptionState.STOPPED
                self._error = error
        if failed:
            log.error("cloudclients: background subscription %s ended in pid %d: %s. It is not restarted; "
                      "check that the subscription exists and the credentials may consume it.",
                      self.subscription, os.getpid(), error)

    # -- fork handling (see _fork) ---------------------------------------------------

    def _fork_locks(self) -> list[threading.Lock]:
        return [self._lock]

    def _forget_parent(self, parent_pid: int, hooks_ran: bool) -> None:
        if self._future is not None:
            keep_inherited(self._future)  # the parent's stream: never cancelled or waited on here
        self._future = None
        self._state = SubscriptionState.IDLE
        self._counts = {"received": 0, "acked": 0, "nacked": 0}
        self._error = None
        self._starting = False  # a start under way in the parent is the parent's
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)


class SubscriptionGroup:
    """Background subscriptions started and stopped together (one per app)."""

    def __init__(self) -> None:
        self._members: list[BackgroundSubscription] = []

    def add(self, subscription: BackgroundSubscription) -> None:
        """Add *subscription* to the group."""
        self._members.append(subscription)

    def __iter__(self) -> Iterator[BackgroundSubscription]:
        return iter(list(self._members))

    def __len__(self) -> int:
        return len(self._members)

    def start_idle(self) -> int:
        """Start every member that has no stream in this process yet; return how many started.

        Members that were stopped or failed are left alone (call their
        ``start()`` to restart them); nothing starts once the registry closes.
        """
        started = 0
        for sub in self:
            if sub.state is SubscriptionState.IDLE and sub.registry.state is RegistryState.OPEN:
                started += sub.start()
        return started

    def stop_all(self, timeout: float) -> None:
        """Stop every member, sharing *timeout* seconds. Never raises.

        Every stream is cancelled first, so that they all drain in parallel;
        then each is waited for with what is left of the timeout.
        """
        deadline = time.monotonic() + timeout
        cancelled = [(sub, sub.cancel()) for sub in self]
        for sub, future in cancelled:
            sub._wait(future, max(deadline - time.monotonic(), 0.0))


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}={value!r} is out of range. Fix: pass a whole number from {low} to {high}.")
