"""The server side of HTTP/2 (RFC 9113) for the gRPC layer: framing, streams, flow control, settings.

Why not ``h2``'s ``H2Connection``: measured on the realistic mix (small
unary calls at a few hundred per second), h2 was three quarters of the
emulator's CPU per call: a frame object per frame (and its ``repr`` built
for a trace log nobody reads), a state machine per stream, a header encoder
per response. Here a frame is unpacked with one ``struct`` call and handled
in place; the response headers gRPC sends are the same few lists, encoded
once. HPACK decoding follows the client's dynamic table
and decodes a block it has seen (while the table is unchanged) only once;
Huffman decoding and the static table are the ``hpack`` library's, errors
h2's exception classes.

What it covers is what a server needs: the client preface, SETTINGS (and
their ACK), PING ACKs, WINDOW_UPDATE in both directions (a window update is
sent once half of a window is consumed), HEADERS with CONTINUATION, padding
and priority, DATA, RST_STREAM, GOAWAY, PRIORITY (ignored), unknown frame
types (ignored); the stream states of RFC 9113 section 5.1 as a server sees
them; connection errors answered with GOAWAY and raised as
``h2.exceptions.ProtocolError``, stream errors with RST_STREAM. It never
pushes and never uses HPACK's dynamic table for what it sends.

The API is the part of ``h2.connection.H2Connection`` that ``grpc_h2`` uses:
:meth:`receive_data` returns events (this module's, named and shaped as
h2's), ``send_headers``, ``send_data``, ``reset_stream``,
``acknowledge_received_data``, ``local_flow_control_window``,
``close_connection`` and ``data_to_send``.
"""

from __future__ import annotations

import struct
from collections import deque

from h2.errors import ErrorCodes
from h2.exceptions import FlowControlError, FrameTooLargeError, ProtocolError, StreamClosedError
from h2.settings import ChangedSetting, SettingCodes
from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

__all__ = ["ConnectionTerminated", "DataReceived", "H2Server", "RemoteSettingsChanged",
           "RequestReceived", "StreamEnded", "StreamReset", "WindowUpdated"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384
DEFAULT_TABLE_SIZE = 4_096

_HEAD = struct.Struct(">BHBBL")  # a frame header: length (3 bytes: high byte, low 16 bits), type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")


# -- events (h2's names and attributes) -----------------------------------------------------------------


class RequestReceived:
    __slots__ = ("headers", "stream_id")

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.stream_id = stream_id
        self.headers = headers


class DataReceived:
    __slots__ = ("data", "flow_controlled_length", "stream_id")

    def __init__(self, stream_id: int, data: bytes, flow_controlled_length: int) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flow_controlled_length = flow_controlled_length


class StreamEnded:
    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamReset:
    __slots__ = ("error_code", "remote_reset", "stream_id")

    def __init__(self, stream_id: int, error_code: int, remote_reset: bool = True) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote_reset = remote_reset


class WindowUpdated:
    """Sent only when the window was used up before (nothing can be waiting for it otherwise): a gRPC
    client sends two WINDOW_UPDATEs per response, mostly while nothing waits."""

    __slots__ = ("delta", "stream_id")

    def __init__(self, stream_id: int, delta: int) -> None:
        self.stream_id = stream_id
        self.delta = delta


class RemoteSettingsChanged:
    __slots__ = ("changed_settings",)

    def __init__(self, changed_settings: dict[SettingCodes | int, ChangedSetting]) -> None:
        self.changed_settings = changed_settings


class ConnectionTerminated:
    __slots__ = ("additional_data", "error_code", "last_stream_id")

    def __init__(self, error_code: int, last_stream_id: int, additional_data: bytes) -> None:
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.additional_data = additional_data


Event = (RequestReceived | DataReceived | StreamEnded | StreamReset | WindowUpdated | RemoteSettingsChanged
         | ConnectionTerminated)


class _Stream:
    """One stream the client opened (idle and closed streams have none)."""

    __slots__ = ("local_closed", "recv_unacked", "recv_window", "remote_closed", "send_window")

    def __init__(self, send_window: int, recv_window: int) -> None:
        self.send_window = send_window
        self.recv_window = recv_window  # what the client may still send before a WINDOW_UPDATE from us
        self.recv_unacked = 0  # consumed and acknowledged by the application, not yet told to the client
        self.remote_closed = False
        self.local_closed = False


class _ConnectionError(Exception):
    def __init__(self, code: ErrorCodes, message: str) -> None:
        super().__init__(message)
        self.code = code


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 section 5.1) whose first byte carries *first* above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """An HPACK header block using no dynamic table: ``:status: 200`` indexed, everything else a literal
    never added to the table (so nothing needs remembering between blocks)."""
    out = []
    for name, value in headers:
        if name == b":status" and value == b"200":
            out.append(b"\x88")
            continue
        out.append(b"\x00" + _integer(len(name), 7, 0) + name + _integer(len(value), 7, 0) + value)
    return b"".join(out)


_STATIC = HeaderTable.STATIC_TABLE  # RFC 7541 appendix A: index 1 is _STATIC[0]


def _read_int(data: bytes, i: int, bits: int) -> tuple[int, int]:
    """An HPACK integer with a *bits*-bit prefix at ``data[i]``; its value and the index after it."""
    mask = (1 << bits) - 1
    value = data[i] & mask
    i += 1
    if value < mask:
        return value, i
    shift = 0
    while True:
        if i >= len(data) or shift > 28:
            raise HPACKDecodingError("Truncated or oversized integer")
        byte = data[i]
        i += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _read_string(data: bytes, i: int) -> tuple[bytes, int]:
    if i >= len(data):
        raise HPACKDecodingError("Truncated header block")
    huffman = data[i] & 0x80
    length, i = _read_int(data, i, 7)
    value = data[i:i + length]
    if len(value) != length:
        raise HPACKDecodingError("Truncated header block")
    return (decode_huffman(value) if huffman else value), i + length


class OversizedHeaderListError(Exception):
    """The header list is over the limit. Decoding stopped there, so the dynamic table may be out of step
    with the client's: always a connection error."""


class HpackDecoder:
    """HPACK decoding (RFC 7541) with the dynamic table, and a cache of the blocks that leave it unchanged.

    A gRPC client sends nearly the same header block on every call (indexed
    fields, a literal or two not indexed); while the dynamic table stays as
    it is, the same bytes decode to the same headers, so those blocks are
    decoded once. Any change to the table empties the cache.
    """

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE, max_header_list_size: int = 65_536) -> None:
        self.max_allowed_table_size = max_table_size  # what we advertised
        self.table_size = max_table_size  # what the encoder set (size updates)
        self.max_header_list_size = max_header_list_size
        self._dynamic: deque[tuple[bytes, bytes]] = deque()
        self._used = 0
        self._cache: dict[bytes, list[tuple[bytes, bytes]]] = {}

    def _get(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= 61:
            return _STATIC[index - 1]
        if 61 < index <= 61 + len(self._dynamic):
            return self._dynamic[index - 62]
        raise HPACKDecodingError(f"Invalid table index {index}")

    def _add(self, header: tuple[bytes, bytes]) -> None:
        size = 32 + len(header[0]) + len(header[1])
        dynamic = self._dynamic
        while dynamic and self._used + size > self.table_size:
            name, value = dynamic.pop()
            self._used -= 32 + len(name) + len(value)
        if size <= self.table_size:  # a larger entry empties the table and is not added
            dynamic.appendleft(header)
            self._used += size

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The headers of one complete header block (read-only: the list may be shared).

        :raises HPACKDecodingError: a malformed block (a connection error).
        :raises OversizedHeaderListError: over ``max_header_list_size``.
        """
        cached = self._cache.get(block)
        if cached is not None:
            return cached
        headers: list[tuple[bytes, bytes]] = []
        changed = False
        i, n, total = 0, len(block), 0
        while i < n:
            byte = block[i]
            if byte & 0x80:  # indexed field
                index, i = _read_int(block, i, 7)
                header = self._get(index)
            elif byte & 0x40:  # literal, added to the table
                index, i = _read_int(block, i, 6)
                if index:
                    name = self._get(index)[0]
                else:
                    name, i = _read_string(block, i)
                value, i = _read_string(block, i)
                header = (name, value)
                self._add(header)
                changed = True
            elif byte & 0x20:  # dynamic table size update
                if headers:
                    raise HPACKDecodingError("Table size update after a header field")
                size, i = _read_int(block, i, 5)
                if size > self.max_allowed_table_size:
                    raise HPACKDecodingError(f"Table size update to {size}, over {self.max_allowed_table_size}")
                self.table_size = size
                while self._dynamic and self._used > size:
                    name, value = self._dynamic.pop()
                    self._used -= 32 + len(name) + len(value)
                changed = True
                continue
            else:  # literal, not added (never indexed or not)
                index, i = _read_int(block, i, 4)
                if index:
                    name = self._get(index)[0]
                else:
                    name, i = _read_string(block, i)
                value, i = _read_string(block, i)
                header = (name, value)
            headers.append(header)
            total += 32 + len(header[0]) + len(header[1])
            if total > self.max_header_list_size:  # checked per field: 255 KiB of 1-byte references would
                # otherwise expand to 6.7 MB of header list (261,120 fields) before being refused
                self._cache.clear()  # the table may have changed before this field
                raise OversizedHeaderListError(f"A header list over {self.max_header_list_size} bytes")
        if changed:
            self._cache.clear()
        elif len(self._cache) < 64 and n <= 1024:  # a client's call headers are ~100 bytes; a bound per
            # connection (64 KiB of blocks) so a client cannot park 64 x 256 KiB here for the connection's life
            self._cache[block] = headers
        return headers


class H2Server:
    """One server-side HTTP/2 connection: bytes in, events out; calls' headers and data in, bytes out."""

    def __init__(self, settings: dict[SettingCodes, int], connection_window: int = DEFAULT_WINDOW) -> None:
        self._recv_initial = settings.get(SettingCodes.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
        self._max_streams = settings.get(SettingCodes.MAX_CONCURRENT_STREAMS, MAX_WINDOW)
        self._max_frame_in = settings.get(SettingCodes.MAX_FRAME_SIZE, DEFAULT_FRAME_SIZE)
        self._decoder = HpackDecoder(settings.get(SettingCodes.HEADER_TABLE_SIZE, DEFAULT_TABLE_SIZE),
                                     settings.get(SettingCodes.MAX_HEADER_LIST_SIZE, 65_536))
        #: The client's settings that matter here.
        self._send_initial = DEFAULT_WINDOW
        self.max_outbound_frame_size = DEFAULT_FRAME_SIZE
        self._table_size_update = False  # the client changed SETTINGS_HEADER_TABLE_SIZE: say ours is 0
        self.streams: dict[int, _Stream] = {}
        self.highest_stream_id = 0  # every stream up to it is open or closed, above it idle
        self._send_window = DEFAULT_WINDOW  # the connection's, towards the client
        self._recv_window = connection_window
        self._recv_window_max = connection_window
        self._recv_unacked = 0
        self._in = b""
        self._preface = False
        self._settings_seen = False
        self._headers_sid = 0  # a header block is being continued on this stream
        self._headers_block = b""
        self._headers_end = False
        # CONTINUATION frames of the block being continued: bounded, so tiny frames cannot make the block's
        # growth quadratic (the byte limit alone allows 262,144 one-byte frames, each copying the block)
        self._continuations = 0
        self._closed = False
        self._goaway_sent = False
        self._out = bytearray()
        self._cache: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}
        payload = b"".join(_SETTING.pack(int(code), value) for code, value in settings.items())
        self._frame(SETTINGS, 0, 0, payload)
        if connection_window > DEFAULT_WINDOW:
            self._frame(WINDOW_UPDATE, 0, 0, _U32.pack(connection_window - DEFAULT_WINDOW))

    # -- output ---------------------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        n = len(payload)
        self._out += _HEAD.pack(n >> 16, n & 0xFFFF, kind, flags, sid)
        self._out += payload

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def pending(self) -> int:
        """Bytes of frames waiting for :meth:`data_to_send`."""
        return len(self._out)

    def _open_stream(self, sid: int) -> _Stream:
        stream = self.streams.get(sid)
        if stream is None or stream.local_closed:
            raise StreamClosedError(sid)
        return stream

    def _forget(self, sid: int, stream: _Stream) -> None:
        if stream.local_closed and stream.remote_closed:
            self.streams.pop(sid, None)

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool = False) -> None:
        stream = self._open_stream(stream_id)
        key = tuple(headers)
        block = self._cache.get(key)
        if block is None:
            block = encode_headers(headers)
            if len(self._cache) < 64 and len(block) <= 256:  # the constant lists; error trailers vary and may
                # echo a client's 64 KiB :path, so big ones are never kept
                self._cache[key] = block
        if self._table_size_update:
            self._table_size_update = False
            block = b"\x20" + block  # dynamic table size update: 0
        flags = END_STREAM if end_stream else 0
        limit = self.max_outbound_frame_size
        if len(block) <= limit:
            self._frame(HEADERS, flags | END_HEADERS, stream_id, block)
        else:
            self._frame(HEADERS, flags, stream_id, block[:limit])
            for i in range(limit, len(block), limit):
                part = block[i:i + limit]
                self._frame(CONTINUATION, END_HEADERS if i + limit >= len(block) else 0, stream_id, part)
        if end_stream:
            stream.local_closed = True
            self._forget(stream_id, stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        stream = self._open_stream(stream_id)
        n = len(data)
        if n > self.max_outbound_frame_size:
            raise FrameTooLargeError(f"Cannot send frame size {n}, max is {self.max_outbound_frame_size}")
        if n > self._send_window or n > stream.send_window:
            raise FlowControlError(f"Cannot send {n} bytes, flow control window is "
                                   f"{min(self._send_window, stream.send_window)}")
        self._send_window -= n
        stream.send_window -= n
        self._frame(DATA, END_STREAM if end_stream else 0, stream_id, data)
        if end_stream:
            stream.local_closed = True
            self._forget(stream_id, stream)

    def local_flow_control_window(self, stream_id: int) -> int:
        """Bytes of DATA that may be sent on *stream_id* now."""
        stream = self._open_stream(stream_id)
        return min(self._send_window, stream.send_window)

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            raise StreamClosedError(stream_id)
        self._frame(RST_STREAM, 0, stream_id, _U32.pack(int(error_code)))

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        """The application consumed *acknowledged_size* bytes of DATA on *stream_id*: open the windows
        again once half of one is used."""
        self._recv_unacked += acknowledged_size
        if self._recv_unacked >= self._recv_window_max // 2:
            self._recv_window += self._recv_unacked
            self._frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._recv_unacked))
            self._recv_unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return  # the client sends no more on it: no window to open
        stream.recv_unacked += acknowledged_size
        if stream.recv_unacked >= self._recv_initial // 2:
            stream.recv_window += stream.recv_unacked
            self._frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(stream.recv_unacked))
            stream.recv_unacked = 0

    def close_connection(self, error_code: int = 0) -> None:
        """GOAWAY: no new streams (open ones go on)."""
        self._goaway_sent = True
        self._frame(GOAWAY, 0, 0, _U32.pack(self.highest_stream_id) + _U32.pack(int(error_code)))

    # -- input ------------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Handle bytes from the client; the events they make.

        :raises h2.exceptions.ProtocolError: a connection error (a GOAWAY is queued; close the connection).
        """
        if self._closed:
            return []
        if type(data) is not bytes:  # a bytearray or memoryview: slices must be bytes (hashable)
            data = bytes(data)
        buf = self._in + data if self._in else data
        events: list[Event] = []
        try:
            if not self._preface:
                if len(buf) < len(PREFACE) and PREFACE.startswith(buf):
                    self._in = buf
                    return events
                if not buf.startswith(PREFACE):
                    raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "Invalid HTTP/2 preface")
                self._preface = True
                buf = buf[len(PREFACE):]
            i, end = 0, len(buf)
            unpack = _HEAD.unpack_from
            max_in = self._max_frame_in
            while end - i >= 9:
                high, low, kind, flags, sid = unpack(buf, i)
                length = high << 16 | low
                if length > max_in:
                    raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, f"Frame of {length} bytes, over {max_in}")
                if end - i < 9 + length:
                    break
                payload = buf[i + 9:i + 9 + length]
                i += 9 + length
                sid &= 0x7FFFFFFF
                if not self._settings_seen and (kind != SETTINGS or flags & ACK):
                    raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "The first frame must be SETTINGS")
                if self._headers_sid and kind != CONTINUATION:
                    raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "A header block was interrupted")
                if kind == WINDOW_UPDATE:
                    self._window_update(sid, payload, events)
                elif kind == DATA:
                    self._data(sid, flags, payload, length, events)
                elif kind == HEADERS:
                    self._headers(sid, flags, payload, events)
                elif kind == CONTINUATION:
                    self._continuation(sid, flags, payload, events)
                else:
                    self._other(kind, flags, sid, payload, events)
            self._in = buf[i:]
        except _ConnectionError as exc:
            self._closed = True
            self._in = b""
            self.close_connection(exc.code)
            error = ProtocolError(str(exc))
            error.error_code = exc.code
            raise error from None
        return events

    def _other(self, kind: int, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        """The frames that come seldom; an unknown type (an extension) is ignored."""
        length = len(payload)
        if kind == PING:
            if length != 8:
                raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "PING must be 8 bytes")
            if sid:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "PING on a stream")
            if not flags & ACK:
                self._frame(PING, ACK, 0, payload)
        elif kind == SETTINGS:
            self._settings(sid, flags, payload, events)
        elif kind == RST_STREAM:
            self._rst_stream(sid, payload, events)
        elif kind == PRIORITY:
            if not sid:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if length != 5:  # the stream is reset: the gRPC layer must hear it, or its call stays open
                self._stream_error(sid, ErrorCodes.FRAME_SIZE_ERROR, events)
        elif kind == GOAWAY:
            if sid:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "GOAWAY on a stream")
            if length < 8:
                raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            events.append(ConnectionTerminated(_U32.unpack_from(payload, 4)[0],
                                               _U32.unpack_from(payload)[0] & 0x7FFFFFFF, payload[8:]))
        elif kind == PUSH_PROMISE:
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "A client cannot push")

    def _stream_error(self, sid: int, code: ErrorCodes, events: list[Event] | None = None) -> None:
        """RST_STREAM *code*: the stream (if open) is over; reported in *events* when given."""
        self.streams.pop(sid, None)
        self._frame(RST_STREAM, 0, sid, _U32.pack(int(code)))
        if events is not None:
            events.append(StreamReset(sid, code, False))

    def _window_update(self, sid: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "WINDOW_UPDATE must be 4 bytes")
        delta = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not sid:
            if not delta:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            blocked = self._send_window <= 0
            self._send_window += delta
            if self._send_window > MAX_WINDOW:
                raise _ConnectionError(ErrorCodes.FLOW_CONTROL_ERROR, "Connection window over 2^31-1")
            if blocked:
                events.append(WindowUpdated(0, delta))
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.highest_stream_id:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # closed: may have been in flight
        if not delta:
            self._stream_error(sid, ErrorCodes.PROTOCOL_ERROR, events)
            return
        blocked = stream.send_window <= 0
        stream.send_window += delta
        if stream.send_window > MAX_WINDOW:
            self._stream_error(sid, ErrorCodes.FLOW_CONTROL_ERROR, events)
            return
        if blocked and not stream.local_closed:
            events.append(WindowUpdated(sid, delta))

    def _data(self, sid: int, flags: int, payload: bytes, length: int, events: list[Event]) -> None:
        if not sid:
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "DATA on stream 0")
        if length > self._recv_window:
            raise _ConnectionError(ErrorCodes.FLOW_CONTROL_ERROR, "DATA beyond the connection's window")
        self._recv_window -= length
        stream = self.streams.get(sid)
        if stream is None or stream.remote_closed:
            if stream is None and sid > self.highest_stream_id:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            # Its bytes count against the connection's window: given back at once, nobody else will.
            self.acknowledge_received_data(length, 0)
            if stream is not None:  # after the client's END_STREAM: a stream error
                self._stream_error(sid, ErrorCodes.STREAM_CLOSED, events)
            # else closed (answered, or reset by either side): frames still in flight are ignored
            return
        if length > stream.recv_window:
            self.acknowledge_received_data(length, 0)
            self._stream_error(sid, ErrorCodes.FLOW_CONTROL_ERROR, events)
            return
        stream.recv_window -= length
        if flags & PADDED:
            if not payload or payload[0] >= length:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "Invalid padding")
            data = payload[1:length - payload[0]]
        else:
            data = payload
        events.append(DataReceived(sid, data, length))
        if flags & END_STREAM:
            stream.remote_closed = True
            events.append(StreamEnded(sid))
            self._forget(sid, stream)

    def _headers(self, sid: int, flags: int, payload: bytes, events: list[Event]) -> None:
        if not sid:
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "HEADERS on stream 0")
        start, end = 0, len(payload)
        if flags & PADDED:
            if not payload:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "Invalid padding")
            start, end = 1, end - payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        if start > end:
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "Invalid padding")
        block = payload[start:end]
        if flags & END_HEADERS:
            self._header_block(sid, flags & END_STREAM, block, events)
        else:
            self._headers_sid, self._headers_block, self._headers_end = sid, block, bool(flags & END_STREAM)
            self._continuations = 0

    def _continuation(self, sid: int, flags: int, payload: bytes, events: list[Event]) -> None:
        if not self._headers_sid or sid != self._headers_sid:
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        self._headers_block += payload
        self._continuations += 1
        if self._continuations > 64:
            raise _ConnectionError(ErrorCodes.ENHANCE_YOUR_CALM, "Too many CONTINUATION frames")
        if len(self._headers_block) > 4 * self._decoder.max_header_list_size:
            raise _ConnectionError(ErrorCodes.ENHANCE_YOUR_CALM, "Header block too large")
        if flags & END_HEADERS:
            block, end_stream = self._headers_block, self._headers_end
            self._headers_sid, self._headers_block = 0, b""
            self._header_block(sid, end_stream, block, events)

    def _header_block(self, sid: int, end_stream: int, block: bytes, events: list[Event]) -> None:
        try:  # always decoded, even when refused: the client's dynamic table must be followed
            headers = self._decoder.decode(block)
        except OversizedHeaderListError as exc:
            raise _ConnectionError(ErrorCodes.ENHANCE_YOUR_CALM, str(exc)) from None
        except HPACKDecodingError as exc:
            raise _ConnectionError(ErrorCodes.COMPRESSION_ERROR, f"Bad header block: {exc}") from None
        stream = self.streams.get(sid)
        if stream is not None:  # trailers
            if stream.remote_closed:
                self._stream_error(sid, ErrorCodes.STREAM_CLOSED, events)
            elif not end_stream:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "Trailers without END_STREAM")
            else:
                stream.remote_closed = True
                events.append(StreamEnded(sid))
                self._forget(sid, stream)
            return
        if sid <= self.highest_stream_id:  # closed (a new stream's id must be higher than any before)
            self._stream_error(sid, ErrorCodes.STREAM_CLOSED)
            return
        if not sid & 1:
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, f"Stream {sid} is not a client's")
        self.highest_stream_id = sid
        if self._goaway_sent or len(self.streams) >= self._max_streams:
            self._stream_error(sid, ErrorCodes.REFUSED_STREAM)
            return
        stream = self.streams[sid] = _Stream(self._send_initial, self._recv_initial)
        events.append(RequestReceived(sid, headers))
        if end_stream:
            stream.remote_closed = True
            events.append(StreamEnded(sid))

    def _rst_stream(self, sid: int, payload: bytes, events: list[Event]) -> None:
        if not sid:
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "RST_STREAM must be 4 bytes")
        if sid > self.highest_stream_id:
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        if self.streams.pop(sid, None) is not None:
            events.append(StreamReset(sid, _U32.unpack(payload)[0], True))

    def _settings(self, sid: int, flags: int, payload: bytes, events: list[Event]) -> None:
        if sid:
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        self._settings_seen = True
        if len(payload) % 6:
            raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        changed: dict[SettingCodes | int, ChangedSetting] = {}
        for offset in range(0, len(payload), 6):
            code, value = _SETTING.unpack_from(payload, offset)
            if code == SettingCodes.ENABLE_PUSH and value > 1:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH must be 0 or 1")
            if code == SettingCodes.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ConnectionError(ErrorCodes.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too large")
                delta, self._send_initial = value - self._send_initial, value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise _ConnectionError(ErrorCodes.FLOW_CONTROL_ERROR, "A stream window over 2^31-1")
                changed[SettingCodes.INITIAL_WINDOW_SIZE] = ChangedSetting(
                    SettingCodes.INITIAL_WINDOW_SIZE, value - delta, value)
            elif code == SettingCodes.MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= 2**24 - 1:
                    raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, f"Invalid SETTINGS_MAX_FRAME_SIZE {value}")
                self.max_outbound_frame_size = value
            elif code == SettingCodes.HEADER_TABLE_SIZE:
                self._table_size_update = True
        self._frame(SETTINGS, ACK, 0, b"")
        if changed:
            events.append(RemoteSettingsChanged(changed))
