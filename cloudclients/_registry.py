"""One client of each kind per process: lazy, lock-guarded, fork-aware.

No Flask and no Google imports here: a registry holds *factories* (callables
returning a client) and builds each client on first use inside the process that
uses it. The built-in publisher, subscriber and storage factories come from
``_factories`` through :meth:`ClientRegistry.from_settings`.

Why all the care about ``fork``
-------------------------------
gunicorn ``--preload``, uWSGI, ``multiprocessing`` and Celery prefork load the
app in one process and then ``fork()`` workers. The child gets a *copy* of the
parent's memory but only the forking thread. A gRPC channel copied that way
refers to threads, sockets and mutexes that no longer exist in the child: using
it hangs, and even finalising it (``__del__``, ``close()``) can touch the
parent's sockets or crash. A ``threading.Lock`` that another parent thread held
at the moment of the fork stays locked forever in the child.

So, in a child we:

1. never use, close, stop or finalise an inherited client: we move the
   references into ``_INHERITED`` (kept for the life of the process, so the
   garbage collector never runs their ``__del__``) and forget them;
2. replace every lock with a fresh one (an inherited lock may be held by a
   thread that does not exist here);
3. stamp the new pid last, so that a concurrent reader that sees the new pid
   also sees the reset state.

``os.register_at_fork`` runs hooks for ``os.fork()`` and ``multiprocessing``'s
fork start method. It does *not* run for a C-level ``fork()`` (uWSGI without
``--py-call-osafterfork``, extension modules, ctypes), so every access also
compares the stamped pid with ``os.getpid()`` and performs the same reset when
they differ.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, cast

if TYPE_CHECKING:  # typing only: the runtime Google imports live in _factories
    from google.cloud import storage
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

    from ._config import Settings

__all__ = ["ClientRegistry", "ClientStats", "PingResult", "RegistryState", "RegistryStats"]

log = logging.getLogger("cloudclients")

Factory = Callable[[], Any]
Closer = Callable[[Any, float], None]
Metrics = Callable[[Any], Mapping[str, int]]
#: ``ping(client, timeout)``: one cheap call to the client's service; raises when unreachable.
Pinger = Callable[[Any, float], None]
#: ``hook(timeout)``: run by :meth:`ClientRegistry.close` before any client is closed.
CloseHook = Callable[[float], None]

#: One lock per process for the post-fork reset, keyed by pid (see
#: ``ClientRegistry._reset_after_fork``): entries copied from a parent carry
#: the parent's pid and are never used by the child.
_RESET_LOCKS: dict[int, threading.Lock] = {}

#: How long the before-fork hook waits for a client under construction. A
#: construction that takes longer (a stuck metadata-server lookup) must not
#: block the fork forever; the child replaces the lock anyway.
FORK_LOCK_TIMEOUT = 5.0

# References to clients inherited from a parent process. Never read: holding
# them keeps their finalisers from running in the child (see module docstring).
_INHERITED: list[object] = []

_MISSING: Any = object()


class RegistryState(enum.Enum):
    """Lifecycle of a :class:`ClientRegistry`."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class ClientStats(TypedDict):
    """Per-client part of :meth:`ClientRegistry.stats`."""

    alive: bool
    constructions: int
    #: Client-specific counters (the publisher: ``published``, ``failed``,
    #: ``outstanding``); empty when the client is not built in this process.
    metrics: dict[str, int]


class PingResult(TypedDict):
    """One client's part of :meth:`ClientRegistry.ping` (JSON-serialisable)."""

    ok: bool
    #: Wall time of the check in milliseconds (the timeout when it did not finish).
    ms: float
    #: ``None`` when ok, else the exception type and the first line of its message.
    error: str | None


class RegistryStats(TypedDict):
    """What :meth:`ClientRegistry.stats` returns (JSON-serialisable)."""

    pid: int
    state: str
    clients: dict[str, ClientStats]
    forks_seen: int


@dataclass
class _Slot:
    factory: Factory
    close: Closer | None
    metrics: Metrics | None = None
    ping: Pinger | None = None
    # Re-entrant so that the before-fork hook, run by a thread that is itself
    # inside a factory (a factory that forks a helper), does not deadlock.
    lock: threading.RLock = field(default_factory=threading.RLock)
    client: Any = _MISSING
    constructions: int = 0


class ClientRegistry:
    """Holds one client per name per process, built lazily on first access.

    Thread-safe: concurrent first accesses build exactly one client
    (double-checked locking, one lock per client so a slow Storage client does
    not hold up the publisher). Fork-safe: a forked child builds its own
    clients and never touches the parent's.

    Creating a registry creates no client; nothing happens until :meth:`get`
    (or one of the properties) is called.

    :param name: a label for logs (the Flask extension uses the app's name).
    """

    def __init__(self, name: str = "cloudclients") -> None:
        self.name = name
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.RLock()
        self._state = RegistryState.OPEN
        self._forks_seen = 0
        self._pid = os.getpid()
        self._close_hooks: list[CloseHook] = []
        self._draining = False  # close hooks running: clients may still be built
        _REGISTRIES.add(self)

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "cloudclients") -> ClientRegistry:
        """Return a registry with the built-in ``publisher``, ``subscriber`` and
        ``storage`` factories configured from *settings* (nothing is built yet)."""
        from . import _factories  # deferred: importing Google libraries is slow

        registry = cls(name)
        pings = _factories.builtin_pings(settings)
        for kind, (factory, closer, metrics) in _factories.builtin_factories(settings).items():
            registry.register(kind, factory, close=closer, metrics=metrics, ping=pings.get(kind))
        return registry

    # -- registration --------------------------------------------------------

    def register(
        self,
        name: str,
        factory: Factory,
        close: Closer | None = None,
        *,
        replace: bool = False,
        metrics: Metrics | None = None,
        ping: Pinger | None = None,
    ) -> None:
        """Register a client *factory* under *name* (built on first :meth:`get`).

        :param close: called as ``close(client, timeout)`` by :meth:`close`;
            defaults to calling ``client.close()`` if it has one.
        :param metrics: called as ``metrics(client)`` by :meth:`stats` for the
            client's own counters (must be cheap and never raise).
        :param ping: called as ``ping(client, timeout)`` by :meth:`ping`: one
            cheap request to the client's service that raises when unreachable.
        :param replace: allow replacing an existing registration (for tests:
            ``registry.register("publisher", lambda: fake, replace=True)``).
            A client already built under that name is closed first.
        :raises ValueError: if *name* is taken and *replace* is false.
        :raises RuntimeError: if the registry is closed.
        """
        if self._pid != os.getpid():
            self._reset_after_fork(hooks_ran=False)
        with self._lock:
            self._require_open(f"register {name!r}")
            old = self._slots.get(name)
            if old is not None and not replace:
                raise ValueError(
                    f"A client named {name!r} is already registered on registry {self.name!r}. "
                    "Use another name, or pass replace=True to override it (for tests)."
                )
            self._slots[name] = _Slot(factory=factory, close=close, metrics=metrics, ping=ping)
        if old is not None and old.client is not _MISSING:
            _close_one(name, old.client, old.close, FORK_LOCK_TIMEOUT)

    # -- access ----------------------------------------------------------------

    def get(self, name: str) -> Any:
        """Return the client registered as *name*, building it on first use.

        :raises KeyError: if nothing is registered under *name*.
        :raises RuntimeError: if the registry was closed before the client was built.
        """
        if self._pid != os.getpid():
            self._reset_after_fork(hooks_ran=False)
        try:
            slot = self._slots[name]
        except KeyError:
            raise KeyError(
                f"No client named {name!r} on registry {self.name!r}; registered: "
                f"{sorted(self._slots)}. Register it first with registry.register({name!r}, factory)."
            ) from None
        client = slot.client
        if client is not _MISSING:  # fast path: no lock once built
            return client
        with slot.lock:
            if slot.client is _MISSING:  # re-check: another thread may have won
                self._require_open(f"create the {name!r} client")
                started = time.perf_counter()
                built = slot.factory()
                slot.constructions += 1
                slot.client = built
                _LIVE.add(self)
                log.info(
                    "cloudclients: created %s client in pid %d (%.1f ms)",
                    name, os.getpid(), (time.perf_counter() - started) * 1000,
                )
            return slot.client

    @property
    def publisher(self) -> PublisherClient:
        """The process's Pub/Sub ``PublisherClient``."""
        return cast("PublisherClient", self.get("publisher"))

    @property
    def subscriber(self) -> SubscriberClient:
        """The process's Pub/Sub ``SubscriberClient``."""
        return cast("SubscriberClient", self.get("subscriber"))

    @property
    def storage(self) -> storage.Client:
        """The process's Cloud Storage ``Client``."""
        return cast("storage.Client", self.get("storage"))

    def peek(self, name: str) -> Any | None:
        """Return the client *name* if this process already built it, else ``None``.

        Never builds anything: for shutdown hooks, health checks and tests.
        """
        if self._pid != os.getpid():
            self._reset_after_fork(hooks_ran=False)
        slot = self._slots.get(name)
        if slot is None or slot.client is _MISSING:
            return None
        return slot.client

    @property
    def state(self) -> RegistryState:
        """The lifecycle state (OPEN until :meth:`close`)."""
        return self._state

    def stats(self) -> RegistryStats:
        """Return a snapshot: this pid, the state, and per client whether it
        exists in this process and how many times it was constructed here."""
        if self._pid != os.getpid():
            self._reset_after_fork(hooks_ran=False)
        return {
            "pid": self._pid,
            "state": self._state.value,
            "clients": {name: _slot_stats(slot) for name, slot in sorted(self._slots.items())},
            "forks_seen": self._forks_seen,
        }

    def ping(self, timeout: float = 2.0, names: Iterable[str] | None = None) -> dict[str, PingResult]:
        """Check that each client reaches its service; return ``{name: PingResult}``.

        Runs the ``ping`` function of every client registered with one (or of
        *names*), all at once, each in its own daemon thread, and waits at most
        *timeout* seconds in total: a check still running then is reported as
        failed, so a hung service never hangs the caller (a health endpoint).
        Builds clients not built yet in this process. A failing check is
        reported in its result, never raised.

        :raises KeyError: if *names* holds a name that is not registered.
        """
        selected = sorted(n for n, s in self._slots.items() if s.ping is not None) if names is None else list(names)
        for name in selected:
            if name not in self._slots:
                raise KeyError(
                    f"No client named {name!r} on registry {self.name!r}; registered: {sorted(self._slots)}."
                )
        results: dict[str, PingResult] = {}
        done = threading.Condition()
        started = time.perf_counter()

        def check(name: str) -> None:
            began = time.perf_counter()
            error: str | None = None
            try:
                pinger = self._slots[name].ping
                if pinger is None:
                    raise RuntimeError(f"the {name!r} client has no ping function")
                pinger(self.get(name), timeout)
            except Exception as exc:
                first_line = (str(exc).strip().splitlines() or [""])[0][:200]
                error = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
            with done:
                results[name] = {"ok": error is None, "ms": round((time.perf_counter() - began) * 1000, 1),
                                 "error": error}
                done.notify_all()

        for name in selected:
            threading.Thread(target=check, args=(name,), name=f"cloudclients-ping-{name}", daemon=True).start()
        with done:
            done.wait_for(lambda: len(results) == len(selected), timeout=max(timeout, 0.0))
            snapshot = dict(results)
        for name in selected:
            if name not in snapshot:
                snapshot[name] = {"ok": False, "ms": round((time.perf_counter() - started) * 1000, 1),
                                  "error": f"TimeoutError: no answer within {timeout:g} s"}
        return {name: snapshot[name] for name in selected}

    def on_close(self, hook: CloseHook) -> None:
        """Call ``hook(timeout)`` at the start of :meth:`close`, before any
        client is closed, with the time left of close's timeout.

        For work that still needs the clients while it stops (background
        subscriptions finish their callbacks, which may publish): while hooks
        run, clients can still be used and even built. A failing hook is
        logged and the close goes on.
        """
        with self._lock:
            self._close_hooks.append(hook)

    # -- lifecycle ---------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Close every client this process built, sharing *timeout* seconds.

        Idempotent and never raises: a failing close is logged with its
        traceback and the others still run. Clients inherited from a parent
        process are never closed (they belong to the parent). After ``close``
        the registry refuses to build new clients.
        """
        if self._pid != os.getpid():
            self._reset_after_fork(hooks_ran=False)
        with self._lock:
            if self._state is not RegistryState.OPEN:
                return
            self._state = RegistryState.CLOSING
            slots = list(self._slots.items())
        deadline = time.monotonic() + max(timeout, 0.0)
        self._draining = True  # hooks run before any client closes and may still build one
        for hook in list(self._close_hooks):
            _run_close_hook(hook, max(deadline - time.monotonic(), 0.0))
        self._draining = False
        for name, slot in slots:
            with slot.lock:
                client, slot.client = slot.client, _MISSING
            if client is not _MISSING:
                _close_one(name, client, slot.close, max(deadline - time.monotonic(), 0.0))
        self._state = RegistryState.CLOSED
        _LIVE.discard(self)

    def _require_open(self, action: str) -> None:
        if self._state is not RegistryState.OPEN and not self._draining:
            raise RuntimeError(
                f"Cannot {action}: registry {self.name!r} is {self._state.value}. "
                "Clients are not rebuilt after close(); create a new registry "
                "(or a new app) if the process must keep working."
            )

    # -- fork handling (see module docstring) -----------------------------------

    def _locks(self) -> list[threading.RLock]:
        return [self._lock, *(slot.lock for slot in self._slots.values())]

    def _before_fork(self) -> list[threading.RLock]:
        # Hold every lock across fork() so that no child inherits a registry in
        # the middle of a construction or a registration. With a timeout: a
        # factory stuck for longer must not block the fork forever (the child
        # replaces its locks anyway, so a lock we did not get is harmless there).
        taken = []
        for lock in self._locks():
            if lock.acquire(timeout=FORK_LOCK_TIMEOUT):
                taken.append(lock)
        return taken

    def _reset_after_fork(self, hooks_ran: bool) -> None:
        # Runs in the child: from the after_in_child hook (hooks_ran=True), or
        # from the pid check on first access after a fork that skipped the hooks.
        # Under the pid check several threads of the child race here, and the
        # reset must happen once: a second reset after another thread already
        # built a client would orphan that client with its unsent batches. No
        # inherited lock can serialise them (it may be held by a thread that
        # did not survive the fork), so the lock is one made in this process,
        # found by pid: dict.setdefault is atomic, every racer gets the same one.
        pid = os.getpid()
        with _RESET_LOCKS.setdefault(pid, threading.Lock()):
            if self._pid != pid:
                self._reset_slots(pid, hooks_ran)

    def _reset_slots(self, pid: int, hooks_ran: bool) -> None:
        parent = self._pid
        for slot in self._slots.values():
            if slot.client is not _MISSING:
                _INHERITED.append(slot.client)
            slot.client = _MISSING
            slot.constructions = 0
            slot.lock = threading.RLock()
        self._lock = threading.RLock()
        _LIVE.discard(self)  # the copies are not ours to close; nothing left to flush here
        self._forks_seen += 1
        self._pid = pid  # last: readers that see the new pid see the reset slots
        log.info(
            "cloudclients: registry %r reset in pid %d after fork from pid %d (%s); "
            "clients are rebuilt on first use",
            self.name, pid, parent, "at-fork hook" if hooks_ran else "pid check",
        )

    def __repr__(self) -> str:
        alive = [n for n, s in self._slots.items() if s.client is not _MISSING]
        return f"<ClientRegistry {self.name!r} pid={self._pid} state={self._state.value} alive={alive}>"


def _slot_stats(slot: _Slot) -> ClientStats:
    client = slot.client
    alive = client is not _MISSING
    metrics: dict[str, int] = {}
    if alive and slot.metrics is not None:
        try:
            metrics = dict(slot.metrics(client))
        except Exception:  # stats() feeds health checks and logs: never raise
            log.warning("cloudclients: reading client metrics failed", exc_info=True)
    return {"alive": alive, "constructions": slot.constructions, "metrics": metrics}


def _run_close_hook(hook: CloseHook, timeout: float) -> None:
    try:
        hook(timeout)
    except Exception:
        log.error("cloudclients: a close hook failed", exc_info=True)


def _close_one(name: str, client: Any, closer: Closer | None, timeout: float) -> None:
    try:
        if closer is not None:
            closer(client, timeout)
        elif hasattr(client, "close"):
            client.close()
    except Exception:
        log.error("cloudclients: closing the %s client failed", name, exc_info=True)


# -- the single, module-level fork hook -------------------------------------------
#
# Hooks cannot be unregistered, so there is exactly one set for the module,
# iterating over a WeakSet of live registries (a registry that is garbage
# collected simply drops out).

_REGISTRIES: weakref.WeakSet[ClientRegistry] = weakref.WeakSet()

# Registries that built a client in this process and were not closed yet. A
# strong reference on purpose: a registry dropped by its owner (an app that
# went out of scope, a script's ``main()`` that returned) may still hold a
# publisher with batched messages, and the exit handlers in ``_shutdown`` can
# only flush what is still alive. Closing (or a fork, in the child) releases it.
_LIVE: set[ClientRegistry] = set()
_HELD: list[threading.RLock] = []


def _before_fork() -> None:
    for registry in list(_REGISTRIES):
        _HELD.extend(registry._before_fork())


def _after_fork_in_parent() -> None:
    while _HELD:
        _HELD.pop().release()


def _after_fork_in_child() -> None:
    # The held locks were copied into the child locked; they are replaced by
    # _reset_after_fork, never released here (their owner thread is the parent's).
    _HELD.clear()
    for registry in list(_REGISTRIES):
        registry._reset_after_fork(hooks_ran=True)


if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
