"""gevent: switch gRPC to gevent mode before the first client is built.

Under ``gunicorn -k gevent`` (or any ``gevent.monkey.patch_all()``) Python's
threads and sockets become greenlets and cooperative sockets, but gRPC's core
runs its own C threads and polling. Without
``grpc.experimental.gevent.init_gevent()`` a gRPC call blocks the whole event
loop (every other request of the worker stalls behind it) and callbacks from
gRPC threads can deadlock against the hub. gRPC requires the call *after* the
standard library is patched and *before* any gRPC object exists — exactly "just
before this process builds its first client", which is where ``_google``
calls :func:`prepare_grpc`.

gunicorn patches in the worker, after the fork, so a ``--preload`` master
(unpatched, no clients) is never affected. Detection only looks at
``sys.modules``: this module never imports gevent itself.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TypedDict

__all__ = ["GeventStatus", "gevent_status", "grpc_gevent_enabled", "monkey_patched", "prepare_grpc"]

log = logging.getLogger("cloudclients")



class _State:
    # Copied by fork() along with gRPC's own (C) gevent flag, so a plain flag,
    # not a per-pid one, mirrors gRPC's mode in every process.
    enabled = False
    lock = threading.Lock()


def monkey_patched() -> bool:
    """True when gevent has monkey-patched ``socket`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None:
        return False
    try:
        return bool(monkey.is_module_patched("socket"))
    except Exception:  # an unexpected gevent version: treat as not patched
        return False


def grpc_gevent_enabled() -> bool:
    """True once :func:`prepare_grpc` switched gRPC to gevent mode in this process."""
    return _State.enabled


class GeventStatus(TypedDict):
    """What :func:`gevent_status` returns."""

    #: gevent has monkey-patched ``socket`` in this process.
    patched: bool
    #: cloudclients switched gRPC to gevent mode in this process (before its first client).
    grpc_gevent: bool


def gevent_status() -> GeventStatus:
    """Whether this process runs under gevent and gRPC was switched to gevent mode.

    For diagnostics (a stats endpoint, a test): under ``gunicorn -k gevent`` both
    are true once the worker built its first client.
    """
    return {"patched": monkey_patched(), "grpc_gevent": grpc_gevent_enabled()}


def prepare_grpc(init: Callable[[], None], grpc_used_here: bool) -> bool:
    """Call *init* (``grpc.experimental.gevent.init_gevent``) once, if gevent is active.

    :param grpc_used_here: whether this process already made gRPC objects (then
        it is too late for gRPC's gevent mode; a warning says how to fix it).
    :returns: whether gRPC runs in gevent mode.
    """
    if _State.enabled or not monkey_patched():
        return _State.enabled
    with _State.lock:
        if _State.enabled:
            return True
        if grpc_used_here:
            log.warning(
                "cloudclients: gevent monkey-patching detected in pid %d after gRPC clients were built; "
                "gRPC calls may block the event loop. Fix: patch before the app builds any client "
                "(gunicorn -k gevent does; call gevent.monkey.patch_all() first in scripts).", os.getpid(),
            )
        init()
        _State.enabled = True
    log.info("cloudclients: gevent monkey-patching detected in pid %d; gRPC switched to gevent mode", os.getpid())
    return True
