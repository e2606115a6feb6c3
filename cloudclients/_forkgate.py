"""Hold fork() until no thread is inside a gRPC call, and no call starts during it.

Why: gRPC core can only prepare itself for ``fork()`` when no application
thread is inside a gRPC call. Otherwise it logs "Other threads are currently
calling into gRPC, skipping fork() handlers" and the child inherits gRPC state
mid-operation: measured with grpcio 1.85, 3 in 100 children hung with
``GRPC_ENABLE_FORK_SUPPORT`` unset and 27 in 100 with ``=1``, stuck inside
``os.fork()`` itself (in gRPC's own after-fork handler), before any code of
ours could run. That is the normal situation in a threaded app that forks
(multiprocessing, subprocess helpers that fork, preforking servers forking
replacements) while other threads publish.

So every unary gRPC call of our clients passes through :data:`GATE` (a
readers/writer gate: calls share it, fork takes it exclusively). A before-fork
hook waits for the calls in flight to finish and holds new ones back until the
fork is done. Streaming calls (a streaming pull lives for minutes) cannot be
drained and are not gated.

The hook is registered lazily, after gRPC created its first channel, because
``os.register_at_fork`` runs *before* hooks in reverse order of registration:
ours must run before gRPC's, which gRPC registers when its first channel is
created. Being the first of our hooks to run, it opens the fork's window in
``_fork`` (which explains fork handling once): the drain draws on the fork's
one deadline (:data:`~cloudclients._fork.FORK_TIMEOUT`), shared with the
locks taken after it, and forks of several threads take turns.

The gate is a :class:`~cloudclients._fork.ProcessBound`: a child starts with a
fresh gate — no inherited count of calls in flight (only the forking thread
survives), no inherited lock — reset by ``_fork``'s hook or, after a C-level
fork that ran no hook, by the pid check in :meth:`CallGate.call`.
Framework-free and without Google imports on purpose.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator

from ._fork import ProcessBound, enter_fork, leave_fork

__all__ = ["GATE", "CallGate", "ensure_fork_hooks"]

log = logging.getLogger("cloudclients")

_HOOK = "fork gate"


class CallGate(ProcessBound):
    """Shared for calls, exclusive for fork."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False
        super().__init__()  # last: the fork hooks may see this object from here on

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Context for one call: waits while a fork is being prepared."""
        self._checkpid()  # after a C-level fork: never an inherited count or lock
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()

    def before_fork(self) -> None:
        deadline = enter_fork(_HOOK)
        try:
            self._checkpid()  # inherited through a C-level fork: fresh before we wait on it
            with self._cond:
                self._forking = True
                self._cond.wait_for(lambda: self._active == 0, timeout=max(deadline - time.monotonic(), 0.0))
        except Exception:
            log.error("cloudclients: draining gRPC calls before a fork failed; the fork goes on", exc_info=True)

    def after_fork_in_parent(self) -> None:
        try:
            with self._cond:
                self._forking = False
                self._cond.notify_all()
        except Exception:
            log.error("cloudclients: reopening the gRPC call gate after a fork failed", exc_info=True)
        # Last: once the window closes, another thread's fork may close the gate again.
        leave_fork(_HOOK)

    def _forget_parent(self, parent_pid: int, hooks_ran: bool) -> None:
        # The child has only the forking thread: no call is in flight, and the
        # inherited condition may be held by a thread that does not exist here.
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False


GATE = CallGate()

_registered = False
_registered_lock = threading.Lock()


def ensure_fork_hooks() -> None:
    """Register the gate's fork hooks once per process tree (hooks survive fork).

    The child needs no hook of its own: ``_fork``'s resets the gate with every
    other process-bound object.
    """
    global _registered  # noqa: PLW0603 - one registration for the interpreter
    with _registered_lock:
        if _registered or not hasattr(os, "register_at_fork"):
            return
        os.register_at_fork(before=GATE.before_fork, after_in_parent=GATE.after_fork_in_parent)
        _registered = True
