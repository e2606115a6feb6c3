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
hook waits — bounded by :data:`FORK_WAIT` — for the calls in flight to finish
and holds new ones back until the fork is done. Streaming calls (a streaming
pull lives for minutes) cannot be drained and are not gated.

The hook is registered lazily, after gRPC created its first channel, because
``os.register_at_fork`` runs *before* hooks in reverse order of registration:
ours must run before gRPC's, which gRPC registers when its first channel is
created. Framework-free and without Google imports on purpose.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

__all__ = ["FORK_WAIT", "GATE", "CallGate", "ensure_fork_hooks"]

#: Longest a fork waits for in-flight calls (each is bounded by its own
#: timeout anyway). After that the fork proceeds, as it would without us.
FORK_WAIT = 10.0


class CallGate:
    """Shared for calls, exclusive for fork."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Context for one call: waits while a fork is being prepared."""
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

    @property
    def active(self) -> int:
        """Calls in flight right now."""
        return self._active

    def before_fork(self) -> None:
        with self._cond:
            self._forking = True
            self._cond.wait_for(lambda: self._active == 0, timeout=FORK_WAIT)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        # The child has only the forking thread: no call is in flight, and the
        # inherited condition may be held by a thread that does not exist here.
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False


GATE = CallGate()

_registered = False
_registered_lock = threading.Lock()


def ensure_fork_hooks() -> None:
    """Register the fork hooks once per process tree (hooks survive fork)."""
    global _registered  # noqa: PLW0603 - one registration for the interpreter
    with _registered_lock:
        if _registered or not hasattr(os, "register_at_fork"):
            return
        os.register_at_fork(
            before=GATE.before_fork,
            after_in_parent=GATE.after_fork_in_parent,
            after_in_child=GATE.after_fork_in_child,
        )
        _registered = True
