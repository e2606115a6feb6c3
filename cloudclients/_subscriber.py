"""Background subscriptions: a streaming pull per worker process, opt-in.

::

    def on_order(message: ReceivedMessage) -> None:   # return → ack, raise → nack
        ...

    cloudclients.subscribe("orders-worker", on_order, app=app, max_messages=50)

``subscribe`` only *declares* the subscription: nothing is pulled and no
client is built, so calling it at import time in a gunicorn ``--preload``
master is safe. The streaming pull starts inside the process that will run it:

* on the first request the process serves (a ``before_request`` hook), or
* in gunicorn's ``post_worker_init`` hook, for workers that may get no HTTP
  traffic: ``from cloudclients import gunicorn_post_worker_init as post_worker_init``
  in ``gunicorn.conf.py``, or
* by calling :func:`start_subscriptions` (scripts, other servers' post-fork hooks).

It stops when the app's registry closes (at exit, on SIGTERM, in gunicorn's
``worker_exit``): :meth:`ClientRegistry.close` runs our close hook *before*
it closes any client, and the hook cancels every stream (no new messages),
waits for each future with the remaining timeout (running callbacks finish and
ack; leased messages not yet handed to a callback are nacked, so another worker
gets them at once), and only then the registry closes the subscriber client and
flushes what the callbacks published.

Fork: a process forked after a stream started owns a *copy* of it (threads
gone, channel unusable). A pid check forgets the copy (kept referenced so its
finaliser never runs in the child) and the child starts its own stream on its
next trigger.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypedDict

from flask import Flask, current_app

from ._flask import CloudClients
from ._message import ReceivedMessage, from_pulled
from ._registry import ClientRegistry, RegistryState

__all__ = [
    "BackgroundSubscription",
    "SubscriptionStats",
    "gunicorn_post_worker_init",
    "start_subscriptions",
    "subscribe",
]

log = logging.getLogger("cloudclients")

Handler = Callable[[ReceivedMessage], Any]

# Streams inherited from a parent process: never used, only kept referenced.
_INHERITED: list[object] = []

_EXT_KEY = "cloudclients.background"


class SubscriptionStats(TypedDict):
    """What :meth:`BackgroundSubscription.stats` returns (JSON-serialisable)."""

    subscription: str
    pid: int
    running: bool
    received: int
    acked: int
    nacked: int
    #: Why the stream ended on its own (``None`` while running or after a clean stop).
    error: str | None


class BackgroundSubscription:
    """One subscription consumed by a streaming pull in the current process.

    Framework-free: *registry* provides the subscriber client. Prefer
    :func:`subscribe`, which adds the Flask app context and the start triggers.

    :param subscription: the full name, ``projects/P/subscriptions/S``.
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
    :raises ValueError: for an out-of-range setting (named, with the fix).
    """

    def __init__(
        self,
        registry: ClientRegistry,
        subscription: str,
        handler: Handler,
        *,
        max_messages: int = 100,
        max_bytes: int = 100 * 1024 * 1024,
        max_lease_duration: float = 3600.0,
        max_workers: int = 10,
        client: str = "subscriber",
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
        self.subscription = subscription
        self.handler = handler
        self.flow = {"max_messages": max_messages, "max_bytes": max_bytes,
                     "max_lease_duration": float(max_lease_duration), "max_workers": max_workers}
        self.client = client
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._future: Any = None
        self._counts = {"received": 0, "acked": 0, "nacked": 0}
        self._error: str | None = None
        _manager(registry).add(self)

    # -- lifecycle ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while this process has a live stream for the subscription."""
        self._check_pid()
        future = self._future
        return future is not None and not future.done()

    def start(self) -> bool:
        """Start the streaming pull in this process, unless it already runs.

        Builds the subscriber client if needed. Idempotent and cheap once
        started. Does nothing once the registry is closed.

        :returns: whether a stream was started by this call.
        """
        self._check_pid()
        if self._future is not None or self.registry.state is not RegistryState.OPEN:
            return False
        from . import _factories  # deferred: Google imports are slow, and a master never gets here

        with self._lock:
            if self._future is not None or self.registry.state is not RegistryState.OPEN:
                return False
            began = time.perf_counter()
            self._error = None
            self._future = _factories.start_streaming_pull(
                self.registry.get(self.client), self.subscription, self._on_message, **self.flow  # type: ignore[arg-type]
            )
            self._future.add_done_callback(self._on_stream_end)
        log.info(
            "cloudclients: background subscription %s started in pid %d (max_messages=%d, max_workers=%d, %.1f ms)",
            self.subscription, os.getpid(), self.flow["max_messages"], self.flow["max_workers"],
            (time.perf_counter() - began) * 1000,
        )
        return True

    def cancel(self) -> Any:
        """Stop receiving (non-blocking); return the stream's future to wait on, or ``None``."""
        self._check_pid()
        with self._lock:
            future = self._future
        if future is not None and not future.cancelled():
            future.cancel()
        return future

    def stop(self, timeout: float = 10.0) -> bool:
        """Cancel the stream, then wait up to *timeout* seconds for running
        handlers to finish. Idempotent; never raises.

        :returns: whether the stream stopped within *timeout*.
        """
        future = self.cancel()
        return self._wait(future, timeout)

    def stats(self) -> SubscriptionStats:
        """Counters of this process's stream (reset in a forked child)."""
        self._check_pid()
        return {"subscription": self.subscription, "pid": self._pid, "running": self.running,
                **self._counts, "error": self._error}  # type: ignore[typeddict-item]

    def __repr__(self) -> str:
        return f"<BackgroundSubscription {self.subscription!r} pid={self._pid} running={self.running}>"

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
        ms = (time.perf_counter() - began) * 1000
        counts = self._counts
        if stopped:
            log.info(
                "cloudclients: background subscription %s stopped in pid %d in %.0f ms "
                "(%d received, %d acked, %d nacked)", self.subscription, os.getpid(), ms,
                counts["received"], counts["acked"], counts["nacked"],
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
        if future.cancelled():
            return
        try:
            exc = future.exception(timeout=0)
        except Exception:  # cancelled by us: a clean stop
            return
        if exc is not None:
            self._error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
            log.error("cloudclients: background subscription %s ended in pid %d: %s. It is not restarted; "
                      "check that the subscription exists and the credentials may consume it.",
                      self.subscription, os.getpid(), self._error)

    def _check_pid(self) -> None:
        if self._pid == os.getpid():
            return
        # A fork child: the stream belongs to the parent (see module docstring).
        if self._future is not None:
            _INHERITED.append(self._future)
        self._future = None
        self._counts = {"received": 0, "acked": 0, "nacked": 0}
        self._error = None
        self._lock = threading.Lock()
        self._pid = os.getpid()


class _Manager:
    """The background subscriptions of one registry; stops them when it closes."""

    def __init__(self, registry: ClientRegistry) -> None:
        self.subscriptions: list[BackgroundSubscription] = []
        registry.on_close(self.stop_all)

    def add(self, subscription: BackgroundSubscription) -> None:
        self.subscriptions.append(subscription)

    def start_all(self) -> int:
        return sum(1 for sub in list(self.subscriptions) if sub.start())

    def stop_all(self, timeout: float) -> None:
        # Cancel every stream first so that they all drain in parallel, then
        # wait for each with what is left of the timeout.
        deadline = time.monotonic() + timeout
        futures = [(sub, sub.cancel()) for sub in list(self.subscriptions)]
        for sub, future in futures:
            sub._wait(future, max(deadline - time.monotonic(), 0.0))


_MANAGERS: weakref.WeakKeyDictionary[ClientRegistry, _Manager] = weakref.WeakKeyDictionary()
_MANAGERS_LOCK = threading.Lock()


def _manager(registry: ClientRegistry) -> _Manager:
    with _MANAGERS_LOCK:
        manager = _MANAGERS.get(registry)
        if manager is None:
            manager = _MANAGERS[registry] = _Manager(registry)
        return manager


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}={value!r} is out of range. Fix: pass a whole number from {low} to {high}.")


def resolve_subscription(subscription: str, project: str) -> str:
    """Return the full subscription name for *subscription* (short names use *project*).

    :raises ValueError: if it is neither a short name nor ``projects/P/subscriptions/S``.
    """
    if isinstance(subscription, str) and subscription and "/" not in subscription:
        return f"projects/{project}/subscriptions/{subscription}"
    parts = subscription.split("/") if isinstance(subscription, str) else []
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "subscriptions" or not parts[1] or not parts[3]:
        raise ValueError(
            f"subscription={subscription!r} is not a subscription name. Fix: pass a short name "
            "('orders-worker', resolved against CLOUDCLIENTS_PROJECT) or 'projects/P/subscriptions/S'."
        )
    return subscription


# -- Flask glue -----------------------------------------------------------------------


def subscribe(
    subscription: str,
    handler: Handler,
    *,
    app: Flask | None = None,
    max_messages: int = 100,
    max_bytes: int = 100 * 1024 * 1024,
    max_lease_duration: float = 3600.0,
    max_workers: int = 10,
) -> BackgroundSubscription:
    """Declare a background subscription of *app* (default: the current app).

    Nothing starts here (safe in a ``--preload`` master): the stream starts in
    each process on its first request, in gunicorn's ``post_worker_init``
    (:func:`gunicorn_post_worker_init`) or on :func:`start_subscriptions`.
    *handler* runs inside an app context, so it can use ``get_publisher()``
    and friends. See :class:`BackgroundSubscription` for the flow-control
    parameters.

    :param subscription: a short name (resolved against ``CLOUDCLIENTS_PROJECT``)
        or ``projects/P/subscriptions/S``.
    :raises ValueError: for a bad name or flow-control value.
    :raises RuntimeError: without *app* outside an app context, or when
        cloudclients is not initialised on the app.
    """
    if app is None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    assert app is not None
    state = CloudClients.get_state(app)
    name = resolve_subscription(subscription, state.settings.project)

    def in_app_context(message: ReceivedMessage) -> Any:
        with app.app_context():
            return handler(message)

    background = BackgroundSubscription(
        state.registry, name, in_app_context, max_messages=max_messages, max_bytes=max_bytes,
        max_lease_duration=max_lease_duration, max_workers=max_workers,
    )
    if _EXT_KEY not in app.extensions:
        app.extensions[_EXT_KEY] = []
        registry = state.registry
        app.before_request(lambda: _start_on_first_request(registry))
    app.extensions[_EXT_KEY].append(background)
    return background


def _start_on_first_request(registry: ClientRegistry) -> None:
    manager = _MANAGERS.get(registry)
    if manager is not None and not all(s.running for s in manager.subscriptions):
        try:
            manager.start_all()
        except Exception:  # a request must not fail because a stream could not start
            log.error("cloudclients: starting background subscriptions failed", exc_info=True)


def subscriptions(app: Flask | None = None) -> list[BackgroundSubscription]:
    """The background subscriptions declared on *app* (default: the current app)."""
    if app is None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    assert app is not None
    return list(app.extensions.get(_EXT_KEY, []))


def start_subscriptions(app: Flask | None = None) -> int:
    """Start the background subscriptions of *app* in this process — or, without
    *app* and outside an app context, of every app in this process.

    Call it after the fork (a worker's post-fork hook, or the main of a script).

    :returns: how many streams this call started.
    """
    if app is None and not _has_app_context():
        with _MANAGERS_LOCK:
            managers = list(_MANAGERS.values())
        return sum(m.start_all() for m in managers)
    return sum(1 for s in subscriptions(app) if s.start())


def gunicorn_post_worker_init(worker: Any) -> None:
    """gunicorn ``post_worker_init`` hook: start every background subscription in the worker.

    In ``gunicorn.conf.py``: ``from cloudclients import gunicorn_post_worker_init as post_worker_init``.
    """
    start_subscriptions()


def _has_app_context() -> bool:
    from flask import has_app_context

    return has_app_context()
