"""HTTP/1.1 on asyncio with ``h11``: the server side of the port (REST, admin, readiness) and the push client.

h11 parses and frames everything (request line, headers, Content-Length and
chunked bodies, HEAD, keep-alive, pipelining, ``Expect: 100-continue``); this
module adds the I/O and the bounds a server exposed to hostile clients needs:

- a request must arrive in full (head and body) within ``request_timeout``
  of its first byte (408, then close); an idle keep-alive connection is
  closed after ``idle_timeout``;
- heads are limited to 64 KiB (431) and bodies to ``MAX_HTTP_BODY_BYTES``
  (413, then close);
- a request with both Content-Length and Transfer-Encoding is refused with
  400 and the connection closed (RFC 9112 section 6.1: request smuggling);
- anything h11 refuses gets the status it suggests (400 for a bad
  Content-Length, say) and the connection is closed.

Accepting connections (and backing off when out of file descriptors) is
:class:`~.front.Listener`'s job, not this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

from .limits import MAX_HTTP_BODY_BYTES

__all__ = ["HttpClient", "HttpConnection", "Request", "Response"]

log = logging.getLogger("cloudclients_emulator")

MAX_HEAD_BYTES = 64 * 1024
SERVER_NAME = b"cloudclients-emulator"

_REASONS = {
    200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed", 408: b"Request Timeout",
    409: b"Conflict", 413: b"Content Too Large", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 501: b"Not Implemented", 503: b"Service Unavailable",
}


@dataclass
class Request:
    method: str
    target: str  # as sent: percent-encoded path and query
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


class _ClosedError(Exception):
    """The client closed the connection."""


class HttpConnection(asyncio.Protocol):
    """The server side of one HTTP/1.1 connection."""

    def __init__(self, handler: Handler, *, request_timeout: float, idle_timeout: float,
                 on_lost: Callable[[HttpConnection], None]) -> None:
        self.handler = handler
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.on_lost = on_lost
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.transport: asyncio.Transport | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._request_began: float | None = None  # loop time of a request's first byte
        self._idle_since = 0.0
        self._lost = False
        self._task: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self.closing = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self._idle_since = self.loop.time()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task = self.loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self._request_began is None:
            self._request_began = self.loop.time()
        self.h11.receive_data(data)
        # Read on only while the server waits for more: a client pipelining
        # requests (or flooding) is held back by TCP, not buffered here.
        assert self.transport is not None
        self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.h11.receive_data(b"")
        self._wake()
        return True  # keep the write side open for the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wake()
        assert self._drained is not None
        self._drained.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.on_lost(self)

    def pause_writing(self) -> None:
        assert self._drained is not None
        self._drained.clear()

    def resume_writing(self) -> None:
        assert self._drained is not None
        self._drained.set()

    def close(self) -> None:
        """Close now (shutdown); an answer being written may be cut short."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # -- serving ----------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _next_event(self, *, head: bool = False) -> h11.Event | type[h11.PAUSED]:
        """The next event; with *head*, a request head over :data:`MAX_HEAD_BYTES` raises.

        h11's ``max_incomplete_event_size`` bounds only a head still incomplete
        in its buffer: one that arrives whole in a single read is parsed whatever
        its size. So the bytes h11 consumes for the head are counted here.
        """
        assert self.transport is not None
        while True:
            before = len(self.h11.trailing_data[0]) if head else 0
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                if head and before - len(self.h11.trailing_data[0]) > MAX_HEAD_BYTES:
                    raise _HeadTooLargeError
                return event  # type: ignore[return-value]
            if self._lost:
                raise _ClosedError
            if self._request_began is not None:
                deadline = self._request_began + self.request_timeout
            else:
                deadline = self._idle_since + self.idle_timeout
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise TimeoutError
            self._wakeup = self.loop.create_future()
            self.transport.resume_reading()
            try:
                await asyncio.wait_for(self._wakeup, remaining)
            except TimeoutError:
                if self.loop.time() >= deadline:
                    raise
            finally:
                self._wakeup = None

    async def _serve(self) -> None:
        try:
            while not self.closing:
                if not await self._one():
                    break
        except (_ClosedError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()

    async def _one(self) -> bool:
        """Serve one request; False when the connection is done."""
        try:
            event = await self._next_event(head=True)
            if isinstance(event, h11.ConnectionClosed):
                return False
            if not isinstance(event, h11.Request):
                return False
            request = await self._read(event)
        except TimeoutError:
            began = self._request_began is not None
            if began and self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self._send(Response(408, b"request not received in time\n", "text/plain",
                                          [("connection", "close")]), head=False)
            return False
        except h11.RemoteProtocolError as exc:
            if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                await self._send(Response(status, f"{exc}\n".encode(), "text/plain", [("connection", "close")]),
                                 head=False)
            return False
        except _BodyTooLargeError:
            await self._send(Response(413, f"request body larger than {MAX_HTTP_BODY_BYTES} bytes\n".encode(),
                                      "text/plain", [("connection", "close")]), head=False)
            return False
        except _HeadTooLargeError:
            await self._send(Response(431, f"request head larger than {MAX_HEAD_BYTES} bytes\n".encode(),
                                      "text/plain", [("connection", "close")]), head=False)
            return False
        except _AmbiguousLengthError:
            # RFC 9112 section 6.1: such a request may be a smuggling attempt; whatever the answer,
            # the connection must be closed after it. Refused outright: no client sends both.
            await self._send(Response(400, b"request has both Content-Length and Transfer-Encoding\n",
                                      "text/plain", [("connection", "close")]), head=False)
            return False
        try:
            response = await self.handler(request)
        except Exception:
            log.exception("HTTP handler failed for %s %s", request.method, request.target)
            response = Response(500, b'{"error": "the emulator failed (see its log)"}')
        await self._send(response, head=request.method == "HEAD")
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE or self.closing:
            return False
        self.h11.start_next_cycle()
        self._request_began = None
        self._idle_since = self.loop.time()
        # Bytes of a pipelined next request may already be in h11's buffer.
        if self.h11.trailing_data[0]:
            self._request_began = self._idle_since
        return True

    async def _read(self, head: h11.Request) -> Request:
        names = {name for name, _ in head.headers}
        if b"content-length" in names and b"transfer-encoding" in names:
            raise _AmbiguousLengthError
        for name, value in head.headers:
            if name == b"content-length" and int(value) > MAX_HTTP_BODY_BYTES:  # h11 checked it is digits
                raise _BodyTooLargeError
        if self.h11.they_are_waiting_for_100_continue:
            self._write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_HTTP_BODY_BYTES:
                    raise _BodyTooLargeError
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise _ClosedError
        return Request(head.method.decode("ascii", "replace"), head.target.decode("ascii", "replace"),
                       list(head.headers), b"".join(chunks))

    async def _send(self, response: Response, *, head: bool) -> None:
        headers = [("content-type", response.content_type), ("content-length", str(len(response.body))),
                   ("server", "cloudclients-emulator"), *response.headers]
        try:
            self._write(self.h11.send(h11.Response(status_code=response.status, headers=headers,
                                                   reason=_REASONS.get(response.status, b""))))
            if response.body and not head:
                self._write(self.h11.send(h11.Data(data=response.body)))
            self._write(self.h11.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as exc:
            log.debug("HTTP: could not answer: %s", exc)
            return
        assert self._drained is not None
        await self._drained.wait()

    def _write(self, data: bytes | None) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class _BodyTooLargeError(Exception):
    pass


class _HeadTooLargeError(Exception):
    pass


class _AmbiguousLengthError(Exception):
    """Both Content-Length and Transfer-Encoding (h11 would frame the body by the latter)."""


class _NoAnswerError(ConnectionError):
    """The connection failed before a byte of the answer came (a reused one may have been closed under us)."""


#: A pooled push connection idle longer than this is closed rather than reused: servers close idle
#: keep-alive connections after a few seconds (gunicorn 2 s, Node and uvicorn 5 s), and a request sent
#: on one as it closes is lost. (Closed ones we have seen the end of are dropped whatever their age.)
POOL_IDLE_S = 4.0


class HttpClient:
    """A small HTTP/1.1 client for push: keep-alive connections, one request at a time on each.

    A connection taken from the pool may have been closed by the server since
    (keep-alive servers close idle connections). One whose close has been seen,
    or idle over :data:`POOL_IDLE_S`, is not reused; and a request on a reused
    connection that fails before any byte of an answer is sent again, once, on
    a new connection: it never reached the endpoint's application, so it is not
    a failed delivery (each one counts as an attempt for dead-lettering).
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]]] = {}

    async def post(self, url: str, body: bytes, headers: list[tuple[str, str]], timeout: float) -> int:
        """POST *body* to *url*; return the status code.

        :raises OSError, TimeoutError, h11.ProtocolError: no answer.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise OSError(f"push endpoint {url!r} is not an http(s) URL")
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rsplit("@", 1)[-1]
        async with asyncio.timeout(timeout):
            conn = self._pooled(key)
            reused = conn is not None
            while True:
                if conn is None:
                    context = ssl.create_default_context() if scheme == "https" else None
                    conn = await asyncio.open_connection(parts.hostname, port, ssl=context)
                reader, writer = conn
                try:
                    status, reusable = await self._exchange(reader, writer, (host, target), body, headers)
                except _NoAnswerError:
                    writer.close()
                    if not reused:
                        raise
                    log.debug("push to %s: pooled connection was closed by the endpoint; sending again", url)
                    conn, reused = None, False
                    continue
                except BaseException:
                    writer.close()
                    raise
                break
        if reusable:
            self._idle.setdefault(key, []).append((reader, writer, asyncio.get_running_loop().time()))
        else:
            writer.close()
        return status

    def _pooled(self, key: tuple[str, str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The most recently used idle connection to *key* still worth trying; stale ones are closed."""
        idle = self._idle.get(key)
        now = asyncio.get_running_loop().time()
        while idle:
            reader, writer, since = idle.pop()
            if reader.at_eof() or writer.is_closing() or now - since > POOL_IDLE_S:
                writer.close()
                continue
            return reader, writer
        return None

    @staticmethod
    async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: tuple[str, str],
                        body: bytes, headers: list[tuple[str, str]]) -> tuple[int, bool]:
        host, target = where
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method="POST", target=target, headers=[
            ("host", host), ("content-length", str(len(body))), *headers])
        answered = False
        try:
            writer.write(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            await writer.drain()
            status = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    answered = answered or bool(data)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    return status, conn.our_state is h11.DONE and conn.their_state is h11.DONE
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("the push endpoint closed the connection without an answer")
        except (ConnectionError, h11.RemoteProtocolError) as exc:
            if not answered:
                raise _NoAnswerError(str(exc)) from exc
            raise

    def close(self) -> None:
        for conns in self._idle.values():
            for _, writer, _ in conns:
                with contextlib.suppress(Exception):
                    writer.close()
        self._idle.clear()
