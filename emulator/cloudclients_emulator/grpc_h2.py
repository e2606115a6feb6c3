"""gRPC over HTTP/2 on asyncio: the emulator's gRPC server, on :mod:`.http2`.

Why not grpcio's server: it cannot answer HTTP/1.1 on its port, so one public
port meant relaying every gRPC byte through Python to an internal port, and a
sync grpcio server holds a thread per open StreamingPull. Measured here, a
unary call cost about 300 µs of server CPU in grpcio (sync or ``grpc.aio``),
450–500 µs with the relay, and 160 µs on the ``h2`` library directly, about
four times less again on :mod:`.http2` (see there why). :mod:`.http2` does
the HTTP/2 work (framing, HPACK, flow control, settings, pings); this module
adds only gRPC's own layer: the 5-byte message prefix, the method table,
trailers with ``grpc-status``, and cancellation (RST_STREAM) handed to the
handler.

A call is served without a task of its own: a unary handler returns its
response (protobuf or serialised bytes), or a future for one (a waiting Pull,
an injected delay); a streaming handler is an object fed each request and told
about cancellation and flow control.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import h2.errors
import h2.exceptions
import h2.settings

from . import http2
from .errors import ApiError, Code
from .limits import MAX_GRPC_RECEIVE_BYTES

__all__ = ["GrpcConnection", "Method", "ServerCall", "StreamHandler"]

log = logging.getLogger("cloudclients_emulator")

_SETTINGS = {
    # A stock gRPC client queues streams beyond this (measured: with 1,000, the 1,001st StreamingPull on
    # a channel never opens), and users hold 1,000+ on one channel; an open stream costs about 2 KB here.
    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 10_000,
    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4 * 1024 * 1024,
    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
}
_CONNECTION_WINDOW = 16 * 1024 * 1024
#: Request bytes one connection may hold unfinished, over all its calls. DATA is acknowledged at once
#: (so a message larger than the stream window can arrive at all), so without this bound a client could
#: make the server hold MAX_CONCURRENT_STREAMS x 20 MiB of half-sent messages.
MAX_BUFFERED_PER_CONNECTION = 64 * 1024 * 1024
#: A streaming call with more than this queued for the client is not writable.
_HIGH_WATER = 512 * 1024

_RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc"),
                     (b"grpc-accept-encoding", b"identity,deflate,gzip")]
_OK_TRAILERS = [(b"grpc-status", b"0")]


class StreamHandler(Protocol):
    """A streaming call's server side, fed by the connection."""

    def on_message(self, request: Any) -> None: ...

    def on_half_close(self) -> None: ...

    def on_cancel(self) -> None:
        """The call is over: the client cancelled, the connection dropped, or the gRPC layer ended it
        (a message it could not take). Also called after the handler ended the call itself: idempotent."""

    def on_writable(self) -> None: ...


@dataclass(frozen=True)
class Method:
    """One RPC: *unary* ``(request) -> response | bytes | Future``, or *stream* ``(call) -> StreamHandler``."""

    request_type: Any
    unary: Callable[[Any], Any] | None = None
    stream: Callable[[ServerCall], StreamHandler] | None = None


def _percent(message: str) -> bytes:
    """``grpc-message`` encoding: printable ASCII except ``%`` as is, everything else %XX."""
    raw = message.encode("utf-8")
    if all(0x20 <= c <= 0x7E and c != 0x25 for c in raw):
        return raw
    return b"".join(bytes((c,)) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in raw)


def _trailers(code: Code, message: str, details: tuple[Any, ...] = ()) -> list[tuple[bytes, bytes]]:
    if code is Code.OK:
        return _OK_TRAILERS
    out = [(b"grpc-status", b"%d" % code), (b"grpc-message", _percent(message))]
    if details:
        out.append((b"grpc-status-details-bin", _status_details(code, message, details)))
    return out


def _status_details(code: Code, message: str, details: tuple[Any, ...]) -> bytes:
    """A ``google.rpc.Status`` repeating code and message (clients check both match) with *details*,
    base64 without padding as gRPC's ``-bin`` metadata is sent."""
    from google.rpc import status_pb2  # only when there are details: most errors have none

    status = status_pb2.Status(code=int(code), message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return base64.b64encode(status.SerializeToString()).rstrip(b"=")


class ServerCall:
    """One gRPC call (an HTTP/2 stream) on a :class:`GrpcConnection`."""

    __slots__ = ("closed", "conn", "encoding", "future", "handler", "headers_sent", "inbuf", "method", "out",
                 "request", "stream_id", "trailers")

    def __init__(self, conn: GrpcConnection, stream_id: int, method: Method, encoding: bytes) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.method = method
        self.encoding = encoding
        self.inbuf = bytearray()
        self.out = bytearray()
        self.request: bytes | None = None
        self.headers_sent = False
        self.trailers: tuple[Code, str, tuple[Any, ...]] | None = None
        self.closed = False
        self.future: asyncio.Future[Any] | None = None
        self.handler: StreamHandler | None = None

    @property
    def writable(self) -> bool:
        """False while much is queued for a slow client, or once the call is over."""
        return not self.closed and self.trailers is None and len(self.out) < _HIGH_WATER

    def send(self, payload: bytes) -> None:
        """Send one response message (serialised)."""
        if self.closed or self.trailers is not None:
            return
        self.out += len(payload).to_bytes(5, "big")  # compressed flag 0, then the 4-byte length
        self.out += payload
        self.conn.pump(self)

    def finish(self, code: Code, message: str = "", details: tuple[Any, ...] = ()) -> None:
        """End the call with this status (and its *details*, see :class:`~.errors.ApiError`), after what was sent."""
        if self.closed or self.trailers is not None:
            return
        self.trailers = (code, message, details)
        self.conn.pump(self)


class GrpcConnection(asyncio.Protocol):
    """The server side of one HTTP/2 connection carrying gRPC calls."""

    def __init__(self, methods: dict[bytes, Method], on_lost: Callable[[GrpcConnection], None]) -> None:
        self.methods = methods
        self.on_lost = on_lost
        self.calls: dict[int, ServerCall] = {}
        #: Bytes of request messages held (partial ones, and unary requests waiting for their end of stream).
        self.buffered = 0
        self.transport: asyncio.Transport | None = None
        self._receiving = False
        self._flush_pending = False
        self._closing = False
        self._write_paused = False  # the transport's write buffer is over its high-water mark
        self._held: set[ServerCall] = set()  # calls with DATA held back until the socket catches up

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.h2 = http2.H2Server(_SETTINGS, _CONNECTION_WINDOW)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.debug("gRPC connection: HTTP/2 protocol error: %s", exc)
            self._flush()
            self._abort()
            return
        self._receiving = True
        try:
            for event in events:
                handler = _EVENTS.get(type(event))
                if handler is not None:
                    handler(self, event)
        finally:
            self._receiving = False
        self._flush()

    # Back-pressure from the socket. HTTP/2 flow control bounds DATA only as far as the client's windows
    # do (a client may open them to 2 GiB), and not at all PING and SETTINGS acks, resets, trailers: a
    # client that never reads would make the write buffer grow without bound. So DATA moves from a call's
    # queue into the connection's frames only while fewer than _HIGH_WATER bytes wait to be flushed and
    # the transport's buffer is under asyncio's high-water mark; the rest stays queued in the call (which
    # stops being writable: a StreamingPull takes no more messages), and while the buffer is over the
    # mark the connection's requests are not read either.
    def pause_writing(self) -> None:
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        for call in list(self.calls.values()):
            self._cancelled(call)
        self.calls.clear()
        self._held.clear()
        self.on_lost(self)

    # -- events ----------------------------------------------------------------------------------

    def _on_request(self, event: http2.RequestReceived) -> None:
        path = content_type = b""
        encoding = b"identity"
        for name, value in event.headers:
            if name == b":path":
                path = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-encoding":
                encoding = value
        sid = event.stream_id
        # The events of a whole read are handled after it is parsed: a later frame of the same read (the
        # client's RST_STREAM, a stream error) may have closed this stream already, so these answers are
        # sent only if it is still open. (Before, the error escaped data_received and asyncio dropped the
        # connection with every other call on it.)
        if not content_type.startswith(b"application/grpc"):
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.h2.send_headers(sid, [(b":status", b"415")], end_stream=True)
            return
        method = self.methods.get(path)
        if method is None:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.h2.send_headers(sid, _RESPONSE_HEADERS[:2] + _trailers(
                    Code.UNIMPLEMENTED, f"Method not found: {path[:200].decode('latin-1')}"), end_stream=True)
            return
        call = ServerCall(self, sid, method, encoding)
        self.calls[sid] = call
        if encoding not in (b"identity", b"gzip", b"deflate"):
            call.finish(Code.UNIMPLEMENTED, f"Unsupported grpc-encoding {encoding.decode('latin-1')!r}")
            return
        if method.stream is not None:
            call.handler = method.stream(call)

    def _on_data(self, event: http2.DataReceived) -> None:
        sid = event.stream_id
        if event.flow_controlled_length:  # a stream already closed only opens the connection's window
            self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
        call = self.calls.get(sid)
        if call is None or call.closed or call.trailers is not None:
            return
        buf = call.inbuf
        data = event.data
        buf += data
        self.buffered += len(data)
        while len(buf) >= 5:
            size = int.from_bytes(buf[1:5], "big")
            if size > MAX_GRPC_RECEIVE_BYTES:
                call.finish(Code.RESOURCE_EXHAUSTED,
                            f"Received message larger than max ({size} vs. {MAX_GRPC_RECEIVE_BYTES})")
                self._reset(call)
                return
            if len(buf) < 5 + size:
                break
            compressed = buf[0]
            payload = bytes(buf[5:5 + size])
            del buf[:5 + size]
            self.buffered -= 5 + size
            if compressed:
                try:
                    payload = self._decompress(call, payload)
                except ApiError as exc:
                    call.finish(exc.code, exc.message, exc.details)
                    self._reset(call)
                    return
            if call.handler is None:  # unary: exactly one request, run at the end of the stream
                if call.request is not None:
                    call.finish(Code.INTERNAL, "More than one request message for a unary call")
                    self._reset(call)
                    return
                call.request = payload
                self.buffered += len(payload)
            else:
                try:
                    request = call.method.request_type.FromString(payload)
                except Exception:  # any decode failure of hostile bytes
                    call.finish(Code.INVALID_ARGUMENT, "The request could not be parsed")
                    self._reset(call)
                    return
                self._guard(call, call.handler.on_message, request)
        if self.buffered > MAX_BUFFERED_PER_CONNECTION and not call.closed and call.trailers is None:
            # The call whose bytes crossed the line is refused (as a message over the size limit
            # is): the client sees RESOURCE_EXHAUSTED on it, the connection's other calls go on.
            call.finish(Code.RESOURCE_EXHAUSTED,
                        f"The connection holds more than {MAX_BUFFERED_PER_CONNECTION} bytes of unfinished "
                        "request messages; this call's were dropped")
            self._reset(call)

    @staticmethod
    def _decompress(call: ServerCall, payload: bytes) -> bytes:
        if call.encoding == b"identity":
            raise ApiError(Code.INTERNAL, "Compressed message without a grpc-encoding")
        wbits = 31 if call.encoding == b"gzip" else 15
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(payload, MAX_GRPC_RECEIVE_BYTES + 1)
        except zlib.error as exc:
            raise ApiError(Code.INTERNAL, f"Could not decompress the request: {exc}") from None
        if len(out) > MAX_GRPC_RECEIVE_BYTES:
            raise ApiError(Code.RESOURCE_EXHAUSTED,
                           f"Received message larger than max (more than {MAX_GRPC_RECEIVE_BYTES} decompressed)")
        return out

    def _on_end(self, event: http2.StreamEnded) -> None:
        call = self.calls.get(event.stream_id)
        if call is None or call.closed or call.trailers is not None:
            return
        if call.handler is not None:
            self._guard(call, call.handler.on_half_close)
            return
        if call.request is None:
            call.finish(Code.INTERNAL, "No request message for a unary call")
            return
        try:
            request = call.method.request_type.FromString(call.request)
        except Exception:  # any decode failure of hostile bytes
            call.finish(Code.INVALID_ARGUMENT, "The request could not be parsed")
            return
        self.buffered -= len(call.request)
        call.request = None
        assert call.method.unary is not None
        try:
            result = call.method.unary(request)
        except ApiError as exc:
            call.finish(exc.code, exc.message, exc.details)
            return
        except Exception:
            log.exception("gRPC call failed")
            call.finish(Code.INTERNAL, "The emulator failed to answer (see its log)")
            return
        if isinstance(result, asyncio.Future):
            call.future = result
            result.add_done_callback(partial(self._unary_done, call))
        else:
            self._respond(call, result)

    def _unary_done(self, call: ServerCall, future: asyncio.Future[Any]) -> None:
        call.future = None
        if call.closed or future.cancelled():
            if not call.closed:
                call.finish(Code.UNAVAILABLE, "The emulator is shutting down")
            return
        exc = future.exception()
        if isinstance(exc, ApiError):
            call.finish(exc.code, exc.message, exc.details)
        elif exc is not None:
            log.error("gRPC call failed", exc_info=exc)
            call.finish(Code.INTERNAL, "The emulator failed to answer (see its log)")
        else:
            self._respond(call, future.result())

    @staticmethod
    def _respond(call: ServerCall, result: Any) -> None:
        """``send`` then ``finish(OK)``, in one pump (headers, message and trailers)."""
        payload = result if isinstance(result, bytes) else result.SerializeToString()
        if call.closed or call.trailers is not None:
            return
        call.out += len(payload).to_bytes(5, "big")
        call.out += payload
        call.trailers = (Code.OK, "", ())
        call.conn.pump(call)

    def _on_reset(self, event: http2.StreamReset) -> None:
        call = self.calls.pop(event.stream_id, None)
        if call is not None:
            self._cancelled(call)

    def _on_window(self, event: http2.WindowUpdated) -> None:
        if event.stream_id:
            call = self.calls.get(event.stream_id)
            if call is not None and call.out:
                self.pump(call)
        else:
            for call in [c for c in self.calls.values() if c.out]:
                self.pump(call)

    def _on_settings(self, event: http2.RemoteSettingsChanged) -> None:
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            for call in [c for c in self.calls.values() if c.out]:
                self.pump(call)

    def _on_goaway(self, event: http2.ConnectionTerminated) -> None:
        # The client opens no new calls here; open ones go on until they end or the connection does.
        self._closing = True

    # -- sending ------------------------------------------------------------------------------------

    def pump(self, call: ServerCall) -> None:
        """Send what *call* has queued, as far as HTTP/2 flow control allows; then its trailers."""
        if call.closed:
            return
        conn = self.h2
        sid = call.stream_id
        was_writable = len(call.out) < _HIGH_WATER
        try:
            if not call.headers_sent:
                if not call.out and call.trailers is not None:  # trailers-only response
                    conn.send_headers(sid, _RESPONSE_HEADERS[:2] + _trailers(*call.trailers), end_stream=True)
                    self._closed(call)
                    return
                conn.send_headers(sid, _RESPONSE_HEADERS)
                call.headers_sent = True
            out = call.out
            while out:
                if self._write_paused or conn.pending >= _HIGH_WATER:  # the socket is behind: later
                    self._held.add(call)
                    break
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if window <= 0:
                    break
                if window >= len(out):
                    conn.send_data(sid, bytes(out))
                    out.clear()
                else:
                    conn.send_data(sid, bytes(out[:window]))
                    del out[:window]
            if not out and call.trailers is not None:
                conn.send_headers(sid, _trailers(*call.trailers), end_stream=True)
                self._closed(call)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.calls.pop(sid, None)
            self._cancelled(call)
        self._schedule_flush()
        if not was_writable and call.handler is not None and call.writable:
            self._guard(call, call.handler.on_writable)

    def _closed(self, call: ServerCall) -> None:
        """*call* is over (its trailers sent, or reset by us): forget it, and tell its handler.

        The handler hears ``on_cancel`` whoever ended the call: the connection
        ends a stream itself for a message it cannot take (unparsable, too
        large, badly compressed), and a handler that is never told stays
        registered (an open StreamingPull counted for ever). A handler that
        ended the call itself is told too; ``on_cancel`` must be idempotent.
        """
        if call.closed:
            return
        call.closed = True
        call.out.clear()
        self._release(call)
        self.calls.pop(call.stream_id, None)
        if call.handler is not None:
            self._guard(call, call.handler.on_cancel)

    def _cancelled(self, call: ServerCall) -> None:
        """The client went away (RST_STREAM, lost connection): stop serving *call*."""
        if call.closed:
            return
        call.closed = True
        call.out.clear()
        self._release(call)
        if call.future is not None:
            call.future.cancel()
        if call.handler is not None:
            self._guard(call, call.handler.on_cancel)

    def _release(self, call: ServerCall) -> None:
        """Drop what *call* holds of its requests (it is over)."""
        self.buffered -= len(call.inbuf) + (len(call.request) if call.request is not None else 0)
        call.inbuf.clear()
        call.request = None

    def _reset(self, call: ServerCall) -> None:
        """Stop the client sending more on a call already answered."""
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.h2.reset_stream(call.stream_id, h2.errors.ErrorCodes.NO_ERROR)
        self._closed(call)

    def _guard(self, call: ServerCall, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except ApiError as exc:
            call.finish(exc.code, exc.message, exc.details)
        except Exception:
            log.exception("gRPC stream handler failed")
            call.finish(Code.INTERNAL, "The emulator failed (see its log)")

    def _schedule_flush(self) -> None:
        if self._receiving or self._flush_pending:
            return
        self._flush_pending = True
        self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)  # may call pause_writing
        if self._held and not self._write_paused:
            held, self._held = self._held, set()
            for call in held:
                self.pump(call)

    # -- shutdown ------------------------------------------------------------------------------------

    def goaway(self) -> None:
        """Tell the client no new calls are taken here (open ones end by themselves)."""
        if self._closing:
            return
        self._closing = True
        for call in list(self.calls.values()):
            if call.future is not None:
                call.future.cancel()
        self.h2.close_connection()
        self._flush()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


_EVENTS: dict[type, Callable[[GrpcConnection, Any], None]] = {
    http2.RequestReceived: GrpcConnection._on_request,
    http2.DataReceived: GrpcConnection._on_data,
    http2.StreamEnded: GrpcConnection._on_end,
    http2.StreamReset: GrpcConnection._on_reset,
    http2.WindowUpdated: GrpcConnection._on_window,
    http2.RemoteSettingsChanged: GrpcConnection._on_settings,
    http2.ConnectionTerminated: GrpcConnection._on_goaway,
}
