"""Fork safety: the one place that explains it, and the one guard every entry point uses.

Why all the care about ``fork``
-------------------------------
gunicorn ``--preload``, uWSGI, ``multiprocessing`` and Celery prefork load the
app in one process and then ``fork()`` workers; a view or a job runner may fork
too. The child gets a *copy* of the parent's memory but only the forking
thread. A gRPC channel copied that way refers to threads, sockets and mutexes
that no longer exist in the child: using it hangs, and even finalising it
(``__del__``, ``close()``) can touch the parent's sockets or crash. A
``threading.Lock`` that another parent thread held at the moment of the fork
stays locked forever in the child.

So every object of ours that holds state belonging to one process — the client
registry, background subscriptions, the project source, rate-limited logs, the
push verifier's certificate cache, the fork gate — is a :class:`ProcessBound`,
and in a child:

1. it never uses, closes, stops or finalises what it inherited: it hands the
   references to :func:`keep_inherited` (kept for the life of the process, so
   the garbage collector never runs their ``__del__``) and forgets them;
2. it replaces every lock with a fresh one (an inherited lock may be held by a
   thread that does not exist here);
3. the new pid is stamped last, so that a concurrent reader that sees the new
   pid also sees the reset state.

Two ways in
-----------
``os.register_at_fork`` runs hooks for ``os.fork()`` and ``multiprocessing``'s
fork start method. This module registers exactly one set of them, over a
``WeakSet`` of live objects (hooks cannot be unregistered, so never one per
object). Before a fork it takes the objects' locks, so that no child inherits
an object in the middle of a construction; after it, the parent releases them
and the child resets every object. Each object joins the set *last* in its
constructor, once every lock the hooks take exists. A failure on one object
(in any of the three hooks) is logged and the others are still handled: one
broken object must not leave the others' locks held or their state inherited.

The hooks do *not* run for a C-level ``fork()`` (uWSGI without
``--py-call-osafterfork``, extension modules, ctypes). So every entry point
calls :meth:`ProcessBound._checkpid`, which compares the stamped pid with
``os.getpid()`` and performs the same reset when they differ. Several threads
of such a child may race there; the reset must happen once (a second reset
after another thread already built a client would orphan that client with its
unsent batches). No inherited lock can serialise them — it may be held by a
thread that did not survive the fork — so the lock is one made in this
process, found by pid: ``dict.setdefault`` is atomic, every racer gets the
same one.

One fork at a time, within one deadline
---------------------------------------
Several threads may fork at once (a pool whose workers each start a helper
process). Each fork is a *window*, from the first before-fork hook of ours to
the last after-fork hook, and the locks a window took are recorded in it, so
that a thread's after-hook releases exactly the locks its own before-hook
took. (With one list for the whole process, a thread released locks that
another forking thread had just taken: ``RuntimeError: cannot release
un-acquired lock``, and registry locks held for good by threads that had
exited. Measured: 4 threads forking at once, 100 times, with 8 registries:
1-3 registry locks stuck in 4 runs of 4; every later fork then waited the full
deadline and ``register()`` or ``close()`` blocked forever.) Windows are also
serialised by one lock, found by pid like the reset lock so that a child never
waits for a lock a parent's thread held: one fork prepares while no other is
half-way.

Everything a fork waits for in our hooks — another thread's fork, the gRPC
calls in flight (``_forkgate``), each object's lock — draws on one deadline,
:data:`FORK_TIMEOUT` seconds from the first of our before-fork hooks that
runs: a fork never waits longer than that because of us. When it is spent, the
fork goes on: only free locks are taken (a child replaces its locks anyway, so
a lock not taken is harmless there) and calls still in flight are left to
gRPC, as without the gate. Hooks elsewhere join the window with
:func:`enter_fork` and :func:`leave_fork`.

Elsewhere, for the same problem
-------------------------------
* ``_forkgate``: gRPC core must see no call in flight when the process forks
  (or children hang inside ``os.fork()``); a readers/writer gate drains unary
  calls before the fork. Its before-fork hook is registered separately, after
  gRPC's own, because before-fork hooks run in reverse order of registration;
  it is the first of ours to run, so it opens the fork's window and its drain
  draws on the fork's one deadline. The gate itself is a ``ProcessBound``
  (reset with the others in a child, and by its pid check after a C-level fork).
* ``_google.channels``: with ``GRPC_ENABLE_FORK_SUPPORT=0`` a child of a gRPC-using
  parent cannot use gRPC at all, so it talks to Pub/Sub over REST.
* ``_gevent``: gRPC's gevent mode is switched on before a process's first client.

Framework-free and without Google imports on purpose.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Protocol

__all__ = ["FORK_TIMEOUT", "ProcessBound", "enter_fork", "keep_inherited", "leave_fork"]

log = logging.getLogger("cloudclients")

#: The longest a fork waits in our before-fork hooks, in total: for another
#: thread's fork, for unary gRPC calls in flight, for the locks of every object
#: (a client construction under way, a registration). In-flight calls and
#: constructions normally take milliseconds; one still running after 5 s is
#: stuck on an outage or a hanging metadata-server lookup (a publish retries up
#: to its own timeout), and waiting longer only stalls the forking thread. (It
#: used to be 5 s for the locks plus up to 10 s for the gate's drain.)
FORK_TIMEOUT = 5.0

# References inherited from a parent process. Never read: holding them keeps
# their finalisers from running in the child (see the module docstring).
_INHERITED: list[object] = []

#: One reset lock per process, keyed by pid: entries copied from a parent carry
#: the parent's pid and are never used by the child. Re-entrant, because one
#: object's reset may touch another (a subscription reads its registry).
_RESET_LOCKS: dict[int, threading.RLock] = {}

#: One lock per process that serialises fork windows, keyed by pid for the same
#: reason: a child (even of a C-level fork, which runs no hook) must never wait
#: for a window a parent's thread had open.
_WINDOW_LOCKS: dict[int, threading.Lock] = {}


def keep_inherited(obj: object) -> None:
    """Keep *obj* (inherited from the parent process) referenced for good, unused."""
    _INHERITED.append(obj)


class _Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...


class ProcessBound:
    """Base class for objects whose state belongs to the process that made it.

    Subclasses call ``super().__init__()`` *last* in their constructor (from
    then on the fork hooks see the object, so every lock they take must
    exist), call :meth:`_checkpid` at the top of every public entry point, and
    implement :meth:`_forget_parent` (and :meth:`_fork_locks` if they hold
    locks worth holding across a fork).
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        #: How many forks this object has been reset after (in this lineage).
        self.forks_seen = 0
        _BOUND.add(self)

    def _checkpid(self) -> None:
        """Reset this object if the process forked since it was last used (hooks or not)."""
        if self._pid != os.getpid():
            self._reset_after_fork(hooks_ran=False)

    def _fork_locks(self) -> Iterable[_Lock]:
        """The locks to hold across a fork (default: none)."""
        return ()

    def _forget_parent(self, parent_pid: int, hooks_ran: bool) -> None:
        """In the child: hand inherited process-bound state to :func:`keep_inherited`,
        drop it and make fresh locks. Must not touch the inherited objects."""
        raise NotImplementedError

    def _reset_after_fork(self, hooks_ran: bool) -> None:
        pid = os.getpid()
        with _RESET_LOCKS.setdefault(pid, threading.RLock()):
            if self._pid != pid:
                parent = self._pid
                self._forget_parent(parent, hooks_ran)
                self.forks_seen += 1
                self._pid = pid  # last: readers that see the new pid see the reset state


# -- fork windows: one fork at a time, one deadline --------------------------------


class _Window:
    """One fork by one thread, from our first before-fork hook to our last after-fork hook."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.deadline = time.monotonic() + FORK_TIMEOUT
        #: The hooks that entered and have not left yet; the last to leave closes the window.
        self.hooks: set[str] = set()
        #: The objects' locks this fork took, released by this thread's after-fork hook.
        self.held: list[_Lock] = []
        lock = _WINDOW_LOCKS.setdefault(self.pid, threading.Lock())
        # Waiting for another thread's fork counts against this fork's deadline. If that
        # fork is still not done when it is spent, this one goes on unserialised: still
        # correct (each window releases only its own locks), only no longer one at a time.
        self.lock: threading.Lock | None = lock if lock.acquire(timeout=self.remaining()) else None

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)


# Per thread: the window of the fork this thread is in the middle of, if any. A
# thread's before- and after-fork hooks run in that thread, in that order.
_THIS_THREAD = threading.local()


def _window() -> _Window | None:
    window: _Window | None = getattr(_THIS_THREAD, "window", None)
    return window if window is not None and window.pid == os.getpid() else None


def enter_fork(hook: str) -> float:
    """From a before-fork hook: join the calling thread's fork as *hook*, opening its
    window if *hook* is the first of ours to run (which waits for any other
    thread's fork to finish). Returns the fork's deadline (``time.monotonic()``)."""
    return _enter(hook).deadline


def _enter(hook: str) -> _Window:
    window = _window()
    if window is None:
        window = _THIS_THREAD.window = _Window()
    window.hooks.add(hook)
    return window


def leave_fork(hook: str) -> None:
    """From an after-fork hook in the parent: *hook* is done; the last hook to leave
    closes the window and lets the next fork in. Nothing happens if *hook* did
    not enter this thread's fork (a hook registered by another thread while the
    fork was under way runs its after-hook without its before-hook)."""
    window = _window()
    if window is None or hook not in window.hooks:
        return
    window.hooks.discard(hook)
    if not window.hooks:
        _THIS_THREAD.window = None
        if window.lock is not None:
            window.lock.release()


# -- the single, module-level set of fork hooks ------------------------------------

_BOUND: weakref.WeakSet[ProcessBound] = weakref.WeakSet()
_HOOK = "process-bound objects"


def _live_objects() -> list[ProcessBound]:
    # Another thread may construct an object while we copy the set, and iterating
    # a set that changes size raises RuntimeError: copy again (it is short).
    while True:
        try:
            return list(_BOUND)
        except RuntimeError:
            continue


def _describe(obj: object) -> str:
    return f"{type(obj).__name__} at {id(obj):#x}"  # never repr(): it may fail on a broken object


def _before_fork() -> None:
    window = _enter(_HOOK)
    for obj in _live_objects():
        try:
            for lock in obj._fork_locks():
                # timeout=0 still tries once: after the deadline, only free locks are taken.
                if lock.acquire(timeout=window.remaining()):
                    window.held.append(lock)
        except Exception:
            log.error("cloudclients: preparing %s for a fork failed; the fork goes on",
                      _describe(obj), exc_info=True)


def _after_fork_in_parent() -> None:
    window = _window()
    while window is not None and window.held:
        lock = window.held.pop()
        try:
            lock.release()
        except Exception:
            log.error("cloudclients: releasing a lock after a fork failed", exc_info=True)
    leave_fork(_HOOK)


def _after_fork_in_child() -> None:
    # The parent's window: the locks it took were copied into the child locked;
    # each object replaces its own in _forget_parent, so they are dropped here,
    # never released (their owner thread is the parent's).
    _THIS_THREAD.window = None
    for obj in _live_objects():
        try:
            obj._reset_after_fork(hooks_ran=True)
        except Exception:  # its pid stays the parent's: its next _checkpid() tries again
            log.error("cloudclients: resetting %s after a fork failed", _describe(obj), exc_info=True)


if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
