"""Assemble the emulator: state, the one listener (gRPC and HTTP/1.1), push, the storage child, topology.

Everything runs in one asyncio event loop on one thread. :meth:`Emulator.stop`
is bounded: open streams end with UNAVAILABLE, HTTP/2 connections get GOAWAY,
push and injected delays are cancelled, and whatever is still open after a
short grace is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import logging
import signal
import socket
import subprocess
import sys
import time

from .errors import Code
from .faults import Faults
from .front import Listener
from .oidc import TokenSigner
from .push import PushDelivery
from .rest import HttpApp
from .service import ALL_METHODS, Service
from .state import Caps, State, pb
from .topology_rules import read_topology

__all__ = ["Emulator", "is_loopback"]

log = logging.getLogger("cloudclients_emulator")

#: After SIGTERM: time for answers already queued to reach their clients.
STOP_GRACE = 0.5
STORAGE_STOP_WAIT = 1.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Linux: the storage emulator gets SIGTERM if we die, even by SIGKILL.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def is_loopback(host: str) -> bool:
    """True if *host* is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Emulator:
    """A running emulator (see ``__main__`` for the command line)."""

    def __init__(self, host: str, port: int, *, project: str, caps: Caps, request_timeout: float = 10.0,
                 idle_timeout: float = 75.0) -> None:
        """Bind the listening socket (nothing is served before :meth:`start`).

        :raises OSError: the address cannot be bound.
        """
        if not is_loopback(host):
            log.warning("listening on %s, beyond loopback: the admin API (/admin/reset, /admin/faults) is "
                        "unauthenticated and reachable by anyone who can reach this port", host)
        self.project = project
        self.caps = caps
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self._sock = _bind(host, port)
        shown = f"[{host}]" if ":" in host else host
        self.host = f"{shown}:{self._sock.getsockname()[1]}"
        self._storage: subprocess.Popen[bytes] | None = None
        self.storage_host: str | None = None
        self._listener: Listener | None = None
        self._push: PushDelivery | None = None
        self.state: State | None = None
        self._stopped = False

    async def start(self, storage_port: int | None = None, topology: str | None = None) -> None:
        """Start the storage child, load the topology, then serve (so readiness means the topology is there)."""
        # The storage child is forked before anything starts a thread.
        storage_url = self._spawn_storage(storage_port) if storage_port is not None else None
        loop = asyncio.get_running_loop()
        self.state = state = State(loop, self.caps)
        service = Service(state, Faults(ALL_METHODS))
        signer = TokenSigner()  # signs push tokens; its certificates are served on this port
        self._push = state.push = PushDelivery(signer)
        if storage_url is not None:
            await asyncio.to_thread(self._wait_storage, storage_url)
        if topology:
            await self._load_topology(state, topology)
        self._listener = Listener(self._sock, service.grpc_methods(), HttpApp(service, signer),
                                  request_timeout=self.request_timeout, idle_timeout=self.idle_timeout)
        await self._listener.start()

    async def stop(self) -> None:
        """Stop serving, bounded: about :data:`STOP_GRACE` plus the storage child's exit."""
        if self._stopped:
            return
        self._stopped = True
        listener = self._listener
        if listener is not None:
            listener.stop_accepting()
        if self.state is not None:
            self.state.break_streams(Code.UNAVAILABLE)
        if self._push is not None:
            self._push.stop()
        if listener is not None:
            listener.goaway()
            deadline = time.monotonic() + STOP_GRACE
            while listener.open_connections and time.monotonic() < deadline and _busy(listener):
                await asyncio.sleep(0.02)
            listener.close_all()
            await asyncio.sleep(0)
            listener.abort_all()
        else:
            self._sock.close()
        await asyncio.to_thread(self.stop_storage, STORAGE_STOP_WAIT)

    def stop_storage(self, wait: float) -> None:
        if self._storage is not None and self._storage.poll() is None:
            self._storage.terminate()
            try:
                self._storage.wait(wait)
            except subprocess.TimeoutExpired:
                self._storage.kill()

    # -- storage ------------------------------------------------------------------------

    def _spawn_storage(self, port: int) -> str:
        host = self.host.rsplit(":", 1)[0].strip("[]")
        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", host, "--port", str(port),
               "--in-memory"]
        self._storage = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509 - only prctl
        return f"http://{host}:{port}"

    def _wait_storage(self, url: str) -> None:
        import urllib.request  # deferred: 25 ms of start-up, only needed with --storage-port

        assert self._storage is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._storage.poll() is not None:
                raise RuntimeError(f"gcp-storage-emulator exited with {self._storage.returncode}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "/", timeout=1).read()
                self.storage_host = url
                return
            time.sleep(0.05)
        raise RuntimeError(f"gcp-storage-emulator did not answer on {url} within 20 s")

    # -- topology -----------------------------------------------------------------------

    def _full(self, name: str, collection: str) -> str:
        return name if name.startswith("projects/") else f"projects/{self.project}/{collection}/{name}"

    async def _load_topology(self, state: State, path: str) -> None:
        """Create what *path* describes (the rules, shared with cloudclients' pytest plugin, are in
        topology_rules.py)::

            {"topics": [{"name": "orders", "subscriptions": [{"name": "orders-worker", "ackDeadlineSeconds": 30}]}],
             "buckets": ["receipts"]}
        """
        spec = read_topology(path, pb.Subscription)
        for topic in spec.topics:
            name = self._full(topic.name, "topics")
            state.create_topic(pb.Topic(name=name, labels=topic.labels))
            for sub in topic.subscriptions:
                request = pb.Subscription()
                request.CopyFrom(sub.message)
                request.name = self._full(sub.name, "subscriptions")
                request.topic = name
                dlq = request.dead_letter_policy.dead_letter_topic
                if dlq:
                    request.dead_letter_policy.dead_letter_topic = self._full(dlq, "topics")
                state.create_subscription(request)
        if spec.buckets and self.storage_host is None:
            raise RuntimeError(f"topology {path!r}: buckets: the file lists buckets but no --storage-port was given")
        if spec.buckets:
            await asyncio.to_thread(self._create_buckets, list(spec.buckets))

    def _create_buckets(self, buckets: list[str]) -> None:
        import urllib.request  # deferred, as above

        for bucket in buckets:
            data = json.dumps({"name": bucket}).encode()
            req = urllib.request.Request(f"{self.storage_host}/storage/v1/b?project={self.project}", data=data,
                                         method="POST", headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()


def _busy(listener: Listener) -> bool:
    """Some connection still has bytes queued for its client."""
    for transport in [c.transport for c in listener.grpc] + [c.transport for c in listener.http_conns]:
        if transport is not None and not transport.is_closing() and transport.get_write_buffer_size():
            return True
    return False
