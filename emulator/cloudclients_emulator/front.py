"""One port for everything: gRPC (HTTP/2) is relayed to the internal gRPC server,
everything else is answered as HTTP/1.1 (readiness, REST, admin).

grpcio's server cannot answer HTTP/1.1, and clients reach the emulator through a
single ``PUBSUB_EMULATOR_HOST``. So the public listener looks at the first bytes
of each connection: HTTP/2 starts with the preface ``PRI * HTTP/2.0``; any
HTTP/1.1 request starts with a method name.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Front"]

log = logging.getLogger("cloudclients_emulator")

_BUFFER = 256 * 1024


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(_BUFFER):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        # Propagate the end (or a reset) to the other side, then let the
        # opposite pipe finish and close both.
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            src.shutdown(socket.SHUT_RD)


def _relay(client: socket.socket, backend_port: int) -> None:
    try:
        backend = socket.create_connection(("127.0.0.1", backend_port))
    except OSError:
        client.close()
        return
    for s in (client, backend):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pipe, args=(backend, client), daemon=True)
    back.start()
    _pipe(client, backend)
    back.join()
    client.close()
    backend.close()


class Front:
    """The public listener."""

    def __init__(self, host: str, port: int, grpc_port: int, http: Callable[[socket.socket, Any], None]) -> None:
        self.sock = socket.create_server((host, port), backlog=1024, reuse_port=False)
        self.port = int(self.sock.getsockname()[1])
        self.grpc_port = grpc_port
        self.http = http
        self._closed = False

    def serve_forever(self) -> None:
        while not self._closed:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                if self._closed:
                    return
                continue
            threading.Thread(target=self._route, args=(conn, addr), daemon=True).start()

    def _route(self, conn: socket.socket, addr: Any) -> None:
        try:
            conn.settimeout(30)
            head = b""
            while len(head) < 3:
                head = conn.recv(3, socket.MSG_PEEK)
                if not head:
                    conn.close()
                    return
                if len(head) < 3:
                    # Fewer than 3 bytes so far: wait for the rest without spinning.
                    threading.Event().wait(0.001)
            conn.settimeout(None)
        except OSError:
            conn.close()
            return
        if head == b"PRI":
            _relay(conn, self.grpc_port)
        else:
            self.http(conn, addr)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
