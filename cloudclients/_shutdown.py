"""Flush on exit: close every registry at interpreter exit and on SIGTERM.

``PublisherClient.publish()`` returns before anything is sent, and a process
that exits (or is terminated) with messages still batched silently loses them.
This module closes registries — which stops each publisher once and waits for
every outstanding publish — when the process ends.

* ``atexit``: one module-level hook (hooks cannot be unregistered, so never
  one per registry) that closes every registry of this process that built a
  client and asked to be closed at exit (``registry.close_at_exit``), each with
  its own ``close_timeout``. gunicorn workers leave through ``sys.exit`` and run it.
* SIGTERM: installed only from the main thread and only over the default
  handler or a Python callable (never over ``SIG_IGN`` or a C-level handler we
  could not call). It flushes, then *chains*: it calls the previous Python
  handler, or restores the default and re-sends SIGTERM so the exit status
  stays "killed by SIGTERM". Servers that install their own handlers after
  the app is loaded (gunicorn's arbiter and workers, uWSGI) keep theirs; use
  :func:`gunicorn_worker_exit` or rely on ``atexit`` there.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from ._registry import Registry, live_registries

__all__ = ["close_all", "gunicorn_worker_exit", "install_exit_handlers"]

log = logging.getLogger("cloudclients")


class _Sigterm:
    """Whether our SIGTERM handler is installed, and the handler it chains to."""

    installed = False
    previous: Any = None


def install_exit_handlers(registry: Registry, timeout: float | None = None) -> None:
    """Close *registry* when the process exits or receives SIGTERM. Safe to call more than once.

    :param timeout: seconds the close may take (sets ``registry.close_timeout``);
        default: keep the registry's (``CLOUDCLIENTS_SHUTDOWN_TIMEOUT`` for an app's).
    """
    registry.close_at_exit = True
    if timeout is not None:
        registry.close_timeout = timeout
    if _Sigterm.installed or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or previous is None:
        # Ignored on purpose, or installed from C: not ours to replace.
        return
    _Sigterm.previous = previous
    signal.signal(signal.SIGTERM, _on_sigterm)
    _Sigterm.installed = True


def close_all(timeout: float | None = None) -> None:
    """Close every registry with exit handlers in this process (flushing publishers).

    :param timeout: seconds per registry; default: each registry's ``close_timeout``
        (``CLOUDCLIENTS_SHUTDOWN_TIMEOUT`` for an app's). Never raises.
    """
    for registry in live_registries():
        if not registry.close_at_exit:
            continue
        try:
            registry.close(timeout=timeout)
        except Exception:  # close() never raises; belt and braces at exit
            log.error("cloudclients: closing registry %r failed", registry.name, exc_info=True)


def gunicorn_worker_exit(server: Any, worker: Any) -> None:
    """gunicorn ``worker_exit`` hook: flush and close this worker's clients.

    In ``gunicorn.conf.py``: ``from cloudclients import gunicorn_worker_exit as worker_exit``.
    """
    close_all()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    log.info("cloudclients: SIGTERM in pid %d, flushing clients", os.getpid())
    close_all()
    previous = _Sigterm.previous
    if callable(previous):
        previous(signum, frame)
        return
    # Default action: die of SIGTERM, as the sender expects.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@atexit.register
def _at_exit() -> None:
    close_all()
