"""One client per name per process: lazy, lock-guarded, fork-aware, closed once.

Framework-free, and it knows no client: a registry holds *factories*
(callables returning a client) and builds each client on first use inside the
process that uses it. The built-in Pub/Sub and Storage clients are registered
by :meth:`cloudclients.ClientRegistry.from_settings` (``_clients``).

Fork handling (a child forgets the inherited clients and builds its own) is
explained once, in ``_fork``; this class only says what is process-bound: the
clients and the locks.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ._fork import ProcessBound, keep_inherited

__all__ = ["ClientStats", "PingResult", "Registry", "RegistryState", "RegistryStats", "live_registries"]

log = logging.getLogger("cloudclients")

Factory = Callable[[], Any]
Closer = Callable[[Any, float], None]
Metrics = Callable[[Any], Mapping[str, int]]
#: ``ping(client, timeout)``: one cheap call to the client's service; raises when unreachable.
Pinger = Callable[[Any, float], None]
#: ``hook(timeout)``: run by :meth:`Registry.close` before any client is closed.
CloseHook = Callable[[float], object]

#: Default of :attr:`Registry.close_timeout`, seconds.
DEFAULT_CLOSE_TIMEOUT = 10.0

_MISSING: Any = object()


class RegistryState(enum.Enum):
    """Lifecycle of a :class:`~cloudclients.ClientRegistry`.

    ``OPEN`` → (:meth:`~Registry.close`) ``DRAINING`` while the close hooks
    run — clients can still be used and even built, so background work can
    finish and publish — → ``CLOSING`` while the clients close → ``CLOSED``.
    """

    OPEN = "open"
    DRAINING = "draining"
    CLOSING = "closing"
    CLOSED = "closed"


class ClientStats(TypedDict):
    """Per-client part of :meth:`~Registry.stats`."""

    alive: bool
    constructions: int
    #: Client-specific counters (the publisher: ``published``, ``failed``,
    #: ``outstanding``); empty when the client is not built in this process.
    metrics: dict[str, int]


class PingResult(TypedDict):
    """One client's part of :meth:`~Registry.ping` (JSON-serialisable)."""

    ok: bool
    #: Wall time of the check in milliseconds (the timeout when it did not finish).
    ms: float
    #: ``None`` when ok, else the exception type and the first line of its message.
    error: str | None


class RegistryStats(TypedDict):
    """What :meth:`~Registry.stats` returns (JSON-serialisable)."""

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


class Registry(ProcessBound):
    """Holds one client per name per process, built lazily on first access.

    Thread-safe: concurrent first accesses build exactly one client
    (double-checked locking, one lock per client so a slow Storage client does
    not hold up the publisher). Fork-safe: a forked child builds its own
    clients and never touches the parent's (see ``_fork``).

    Creating a registry creates no client; nothing happens until :meth:`get`.

    :param name: a label for logs (the Flask extension uses the app's name).
    :param close_timeout: the default timeout of :meth:`close`, seconds.
    """

    def __init__(self, name: str = "cloudclients", *, close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        self.name = name
        #: Seconds :meth:`close` shares between hooks and clients when called without a timeout.
        self.close_timeout = close_timeout
        #: Whether the exit handlers (``cloudclients.install_exit_handlers``) close this registry.
        self.close_at_exit = False
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.RLock()
        self._state = RegistryState.OPEN
        self._close_hooks: list[CloseHook] = []
        super().__init__()  # last: the fork hooks may see this object from here on

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
        :raises RuntimeError: if the registry is closing or closed.
        """
        self._checkpid()
        with self._lock:
            if self._state is not RegistryState.OPEN:
                raise self._closed_error(f"register {name!r}")
            old = self._slots.get(name)
            if old is not None and not replace:
                raise ValueError(
                    f"A client named {name!r} is already registered on registry {self.name!r}. "
                    "Use another name, or pass replace=True to override it (for tests)."
                )
            self._slots[name] = _Slot(factory=factory, close=close, metrics=metrics, ping=ping)
        if old is not None and old.client is not _MISSING:
            _close_one(name, old.client, old.close, self.close_timeout)

    # -- access ----------------------------------------------------------------

    def get(self, name: str) -> Any:
        """Return the client registered as *name*, building it on first use.

        :raises KeyError: if nothing is registered under *name*.
        :raises RuntimeError: if the registry was closed before the client was built.
        """
        self._checkpid()
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
                if self._state not in (RegistryState.OPEN, RegistryState.DRAINING):
                    raise self._closed_error(f"create the {name!r} client")
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

    def peek(self, name: str) -> Any | None:
        """Return the client *name* if this process already built it, else ``None``.

        Never builds anything: for shutdown hooks, health checks and tests.
        """
        self._checkpid()
        slot = self._slots.get(name)
        if slot is None or slot.client is _MISSING:
            return None
        return slot.client

    @property
    def state(self) -> RegistryState:
        """The lifecycle state (``OPEN`` until :meth:`close`)."""
        self._checkpid()
        return self._state

    def stats(self) -> RegistryStats:
        """Return a snapshot: this pid, the state, and per client whether it
        exists in this process and how many times it was constructed here."""
        self._checkpid()
        return {
            "pid": self._pid,
            "state": self._state.value,
            "clients": {name: _slot_stats(slot) for name, slot in sorted(self._slots.items())},
            "forks_seen": self.forks_seen,
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
        self._checkpid()
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
        run (``DRAINING``), clients can still be used and even built. A failing
        hook is logged and the close goes on.
        """
        self._checkpid()
        with self._lock:
            self._close_hooks.append(hook)

    # -- lifecycle ---------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Close every client this process built, sharing *timeout* seconds
        (default :attr:`close_timeout`) between the close hooks and the clients.

        Idempotent and never raises: a failing close is logged with its
        traceback and the others still run. Clients inherited from a parent
        process are never closed (they belong to the parent). After ``close``
        the registry refuses to build new clients.
        """
        self._checkpid()
        with self._lock:
            if self._state is not RegistryState.OPEN:
                return
            self._state = RegistryState.DRAINING
            hooks = list(self._close_hooks)
            slots = list(self._slots.items())
        deadline = time.monotonic() + max(self.close_timeout if timeout is None else timeout, 0.0)
        for hook in hooks:
            _run_close_hook(hook, max(deadline - time.monotonic(), 0.0))
        with self._lock:
            self._state = RegistryState.CLOSING
        for name, slot in slots:
            with slot.lock:
                client, slot.client = slot.client, _MISSING
            if client is not _MISSING:
                _close_one(name, client, slot.close, max(deadline - time.monotonic(), 0.0))
        self._state = RegistryState.CLOSED
        _LIVE.discard(self)

    def _closed_error(self, action: str) -> RuntimeError:
        return RuntimeError(
            f"Cannot {action}: registry {self.name!r} is {self._state.value}. "
            "Clients are not rebuilt after close(); create a new registry "
            "(or a new app) if the process must keep working."
        )

    # -- fork handling (see _fork) -----------------------------------------------

    def _fork_locks(self) -> list[threading.RLock]:
        return [self._lock, *(slot.lock for slot in self._slots.values())]

    def _forget_parent(self, parent_pid: int, hooks_ran: bool) -> None:
        for slot in self._slots.values():
            if slot.client is not _MISSING:
                keep_inherited(slot.client)
            slot.client = _MISSING
            slot.constructions = 0
            slot.lock = threading.RLock()
        self._lock = threading.RLock()
        _LIVE.discard(self)  # the copies are not ours to close; nothing left to flush here
        log.info(
            "cloudclients: registry %r reset in pid %d after fork from pid %d (%s); "
            "clients are rebuilt on first use",
            self.name, os.getpid(), parent_pid, "at-fork hook" if hooks_ran else "pid check",
        )

    def __repr__(self) -> str:
        alive = [n for n, s in self._slots.items() if s.client is not _MISSING]
        return f"<{type(self).__name__} {self.name!r} pid={self._pid} state={self._state.value} alive={alive}>"


# Registries that built a client in this process and were not closed yet. A
# strong reference on purpose: a registry dropped by its owner (an app that
# went out of scope, a script's ``main()`` that returned) may still hold a
# publisher with batched messages, and the exit handlers can only flush what
# is still alive. Closing (or a fork, in the child) releases it.
_LIVE: set[Registry] = set()


def live_registries() -> list[Registry]:
    """The registries of this process that built a client and are not closed yet."""
    return [r for r in list(_LIVE) if r._pid == os.getpid()]


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
