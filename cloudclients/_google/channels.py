"""gRPC channels: the fork gate on every call, fail-fast against a stopped emulator, the REST
fallback, gevent mode.

gRPC core survives fork() only with its fork support on. grpcio's own default
turns it on in core, but ``GRPC_ENABLE_FORK_SUPPORT=0`` (read once, when grpc
initialises) turns it off, and then a child of a process that had used gRPC
cannot use gRPC at all: its event-engine threads are gone, a fresh channel
hangs forever and the process aborts at exit. Rebuilding the client is not
enough there, so such a child talks to Pub/Sub over the REST transport (plain
HTTP/1.1 through requests), which does not touch gRPC core.

The pids that built a gRPC client are recorded in a set. Memory is copied by
fork(), hooks or not, so a child (even one made by a C-level fork) can tell
that an ancestor used gRPC: the set holds a pid that is not its own.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import grpc
from google.api_core import exceptions as api_exceptions

from .._config import Settings
from .._forkgate import GATE, ensure_fork_hooks
from .._gevent import prepare_grpc
from .credentials import anonymous, credentials

__all__ = ["EmulatorUnreachableError", "grpc_unusable_after_fork", "pubsub_transport", "refused"]

log = logging.getLogger("cloudclients")

# The options the generated transports use for the real service, plus a short
# reconnect backoff: gRPC's default grows to 120 s, so after an emulator restart
# (or any outage of the host we dial) a channel could stay in TRANSIENT_FAILURE,
# failing every call, for minutes after the server is back.
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

_FORK_SUPPORT_DISABLED = os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "").strip().lower() in {
    "0", "false", "no", "off",
}
_GRPC_USERS: set[int] = set()


def grpc_unusable_after_fork() -> bool:
    """True when this process is a fork child that must not use gRPC.

    That is: gRPC fork support is disabled and an ancestor process had built a
    gRPC client before forking.
    """
    me = os.getpid()
    return _FORK_SUPPORT_DISABLED and any(pid != me for pid in _GRPC_USERS)


def _transport_kind() -> str:
    if grpc_unusable_after_fork():
        log.warning(
            "cloudclients: pid %d was forked from a process that used gRPC while "
            "GRPC_ENABLE_FORK_SUPPORT=0; using the Pub/Sub REST transport in this "
            "process (streaming pull is unavailable here). Fork before creating "
            "clients, or unset GRPC_ENABLE_FORK_SUPPORT, to keep gRPC.",
            os.getpid(),
        )
        return "rest"
    _GRPC_USERS.add(os.getpid())
    return "grpc"


def _init_grpc_gevent() -> None:
    from grpc.experimental import gevent as grpc_gevent  # imports gevent: only when it is in use

    grpc_gevent.init_gevent()


def prepare() -> None:
    """Call before a process's first client: under gevent monkey-patching, gRPC must
    be switched to gevent mode before it creates anything (see ``_gevent``)."""
    prepare_grpc(_init_grpc_gevent, grpc_used_here=os.getpid() in _GRPC_USERS)


class EmulatorUnreachableError(api_exceptions.GoogleAPICallError):
    """The Pub/Sub emulator refused the connection: nothing listens at its address.

    Raised by every unary Pub/Sub call (publish, ``get_topic``, ``pull``,
    ``acknowledge``, the CLI's ``create-topic`` …) in emulator mode, at the first
    refused attempt. It is a ``GoogleAPICallError`` (code 503) but deliberately not a
    ``ServiceUnavailable``, which the client library retries for up to 60 s.
    """

    code = 503
    grpc_status_code = grpc.StatusCode.UNAVAILABLE

    def __str__(self) -> str:
        return str(self.message)


EmulatorUnreachableError.__module__ = "cloudclients"  # public as cloudclients.EmulatorUnreachableError


class _GateInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Runs every unary call inside the fork gate (see ``_forkgate``); against an
    emulator, turns a refused connection into :class:`EmulatorUnreachableError`."""

    def __init__(self, emulator_host: str | None = None) -> None:
        self._emulator_host = emulator_host

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        with GATE.call():
            outcome = continuation(client_call_details, request)
        if (self._emulator_host is not None and isinstance(outcome, grpc.RpcError)
                and outcome.code() == grpc.StatusCode.UNAVAILABLE and refused(self._emulator_host)):
            # Raised here, it escapes the generated client's error mapping (which only
            # catches grpc.RpcError) and its retry, whose predicate does not match it.
            raise EmulatorUnreachableError(  # type: ignore[no-untyped-call]
                f"Pub/Sub emulator at {self._emulator_host} not reachable — is it running?")
        return outcome


_INTERCEPTOR = _GateInterceptor()


def refused(host: str) -> bool:
    """True when a TCP connection to *host* (``HOST:PORT``, IPv6 in brackets) is refused:
    nothing listens there. A timeout or an unreachable network is not proof of that."""
    address, _, port = host.rpartition(":")
    try:
        with socket.create_connection((address.strip("[]"), int(port)), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _gated(channel: grpc.Channel, emulator_host: str | None = None) -> grpc.Channel:
    ensure_fork_hooks()  # after gRPC made its first channel: see _forkgate
    return grpc.intercept_channel(channel, _INTERCEPTOR if emulator_host is None else _GateInterceptor(emulator_host))


def pubsub_transport(settings: Settings, grpc_cls: Any, rest_cls: Any) -> Any:
    """A Pub/Sub transport *instance* (gRPC, or REST in a child that cannot use gRPC).

    Passing an instance makes the client ignore ``PUBSUB_EMULATOR_HOST``, which
    would otherwise override our settings (and open a gRPC channel even for REST).
    Emulator mode is applied explicitly: an insecure channel to the configured
    host and anonymous credentials.
    """
    prepare()
    host = settings.pubsub_emulator_host
    if _transport_kind() == "rest":
        if host is not None:
            return rest_cls(host=f"http://{host}", credentials=anonymous())
        return rest_cls(credentials=credentials(settings, "the Pub/Sub client"))
    if host is not None:
        # A channel *instance* makes the transport ignore credentials entirely
        # (a channel factory would still look up Application Default Credentials).
        return grpc_cls(host=host, channel=_gated(grpc.insecure_channel(host, options=_CHANNEL_OPTIONS), host))

    def channel(host: str, **kwargs: Any) -> grpc.Channel:
        # A channel *factory*: the transport still applies credentials, scopes
        # and TLS exactly as it would on its own; we only add the fork gate.
        return _gated(grpc_cls.create_channel(host, **kwargs))

    return grpc_cls(credentials=credentials(settings, "the Pub/Sub client"), channel=channel)
