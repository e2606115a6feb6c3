"""One port for everything: each connection's first bytes say whether it speaks gRPC or HTTP/1.1.

Clients reach the emulator through a single ``PUBSUB_EMULATOR_HOST``. An
HTTP/2 client (gRPC) starts with the preface ``PRI * HTTP/2.0``; an HTTP/1.1
request starts with a method name. The listener reads the first bytes and
hands the connection, those bytes included, to :class:`~.grpc_h2.GrpcConnection`
or :class:`~.http11.HttpConnection` in the same process and event loop: no
relay, no internal port.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket

from .grpc_h2 import GrpcConnection, Method
from .http11 import Handler, HttpConnection

__all__ = ["ACCEPT_PAUSE", "Listener"]

log = logging.getLogger("cloudclients_emulator")

_PREFACE = b"PRI "
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_PAUSE = 0.5


class _Sniff(asyncio.Protocol):
    """A new connection, until its first bytes are in."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._timer = asyncio.get_running_loop().call_later(self.listener.idle_timeout, transport.close)
        self.listener.sniffing.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < len(_PREFACE) and _PREFACE.startswith(self.buffer):
            return  # too few bytes to tell yet
        assert self.transport is not None
        if self._timer is not None:
            self._timer.cancel()
        self.listener.sniffing.discard(self)
        protocol = self.listener.protocol_for(self.buffer.startswith(_PREFACE))
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(self.buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.listener.sniffing.discard(self)


class Listener:
    """The public listening socket and every connection it accepted."""

    def __init__(self, sock: socket.socket, methods: dict[bytes, Method], http: Handler, *,
                 request_timeout: float, idle_timeout: float) -> None:
        self.sock = sock
        self.methods = methods
        self.http = http
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.sniffing: set[_Sniff] = set()
        self.grpc: set[GrpcConnection] = set()
        self.http_conns: set[HttpConnection] = set()
        self._accepting = False
        self._warned_at = -math.inf

    async def start(self) -> None:
        """Listen and accept.

        The accept loop is this class's own: asyncio's, out of file descriptors,
        retries the whole backlog at once and logs each failure with a traceback.
        Here a failed accept pauses accepting for :data:`ACCEPT_PAUSE` seconds
        (connections wait in the kernel's queue) with one warning a minute.
        """
        self.loop = asyncio.get_running_loop()
        self.sock.listen(1024)
        self.loop.add_reader(self.sock.fileno(), self._accept)
        self._accepting = True

    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause(exc)
                else:
                    log.warning("accept() failed: %s", exc)
                return
            conn.setblocking(False)
            self.loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: _Sniff(self), conn)
        except OSError as exc:
            log.debug("could not set up an accepted connection: %s", exc)
            conn.close()

    def _pause(self, exc: OSError) -> None:
        self.loop.remove_reader(self.sock.fileno())
        now = self.loop.time()
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning("cannot accept connections (%s) with %d open: pausing accept() for %.1f s at a time",
                        exc.strerror, self.open_connections, ACCEPT_PAUSE)
        self.loop.call_later(ACCEPT_PAUSE, self._resume)

    def _resume(self) -> None:
        if self._accepting:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def protocol_for(self, is_http2: bool) -> asyncio.Protocol:
        if is_http2:
            grpc = GrpcConnection(self.methods, self.grpc.discard)
            self.grpc.add(grpc)
            return grpc
        http = HttpConnection(self.http, request_timeout=self.request_timeout, idle_timeout=self.idle_timeout,
                              on_lost=self.http_conns.discard)
        self.http_conns.add(http)
        return http

    def stop_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def goaway(self) -> None:
        """No new work: GOAWAY on HTTP/2 connections, HTTP/1.1 ones closed after their current answer."""
        for conn in list(self.grpc):
            conn.goaway()
        for http in list(self.http_conns):
            http.closing = True
        for sniff in list(self.sniffing):
            if sniff.transport is not None:
                sniff.transport.close()

    def close_all(self) -> None:
        for conn in list(self.grpc):
            conn.close()
        for http in list(self.http_conns):
            http.close()

    def abort_all(self) -> None:
        for conn in list(self.grpc):
            if conn.transport is not None:
                conn.transport.abort()
        for http in list(self.http_conns):
            if http.transport is not None:
                http.transport.abort()

    @property
    def open_connections(self) -> int:
        return len(self.grpc) + len(self.http_conns) + len(self.sniffing)
