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
registry, background subscriptions, the push verifier's certificate cache —
is a :class:`ProcessBound`, and in a child:

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
object). Before a fork it takes the objects' locks — all of them within one
:data:`FORK_LOCK_TIMEOUT` deadline, so that no child inherits an object in the
middle of a construction; after it, the parent releases them and the child
resets every object.

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

Elsewhere, for the same problem
-------------------------------
* ``_forkgate``: gRPC core must see no call in flight when the process forks
  (or children hang inside ``os.fork()``); a readers/writer gate drains unary
  calls before the fork. Its hook is registered separately, after gRPC's own,
  because before-fork hooks run in reverse order of registration.
* ``_google.channels``: with ``GRPC_ENABLE_FORK_SUPPORT=0`` a child of a gRPC-using
  parent cannot use gRPC at all, so it talks to Pub/Sub over REST.
* ``_gevent``: gRPC's gevent mode is switched on before a process's first client.

Framework-free and without Google imports on purpose.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Protocol

__all__ = ["FORK_LOCK_TIMEOUT", "ProcessBound", "keep_inherited"]

#: The longest a fork waits, in total, for the locks of every object (a client
#: construction under way, a registration). A construction stuck longer (a
#: hanging metadata-server lookup) must not block the fork forever; the child
#: replaces its locks anyway, so a lock not taken is harmless there.
FORK_LOCK_TIMEOUT = 5.0

# References inherited from a parent process. Never read: holding them keeps
# their finalisers from running in the child (see the module docstring).
_INHERITED: list[object] = []

#: One reset lock per process, keyed by pid: entries copied from a parent carry
#: the parent's pid and are never used by the child. Re-entrant, because one
#: object's reset may touch another (a subscription reads its registry).
_RESET_LOCKS: dict[int, threading.RLock] = {}


def keep_inherited(obj: object) -> None:
    """Keep *obj* (inherited from the parent process) referenced for good, unused."""
    _INHERITED.append(obj)


class _Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...


class ProcessBound:
    """Base class for objects whose state belongs to the process that made it.

    Subclasses call ``super().__init__()``, call :meth:`_checkpid` at the top
    of every public entry point, and implement :meth:`_forget_parent` (and
    :meth:`_fork_locks` if they hold locks worth holding across a fork).
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


# -- the single, module-level set of fork hooks ------------------------------------

_BOUND: weakref.WeakSet[ProcessBound] = weakref.WeakSet()
_HELD: list[_Lock] = []


def _before_fork() -> None:
    deadline = time.monotonic() + FORK_LOCK_TIMEOUT
    for obj in list(_BOUND):
        for lock in obj._fork_locks():
            # timeout=0 still tries once: after the deadline, only free locks are taken.
            if lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                _HELD.append(lock)


def _after_fork_in_parent() -> None:
    while _HELD:
        _HELD.pop().release()


def _after_fork_in_child() -> None:
    # The held locks were copied into the child locked; each object replaces
    # its own in _forget_parent, so they are dropped here, never released
    # (their owner thread is the parent's).
    _HELD.clear()
    for obj in list(_BOUND):
        obj._reset_after_fork(hooks_ran=True)


if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
