"""The emulator's HTTP/2 server (``cloudclients_emulator.http2``) against the ``h2`` library as the client.

In memory, no sockets: each test passes bytes between an ``h2`` client
connection and an :class:`~cloudclients_emulator.http2.H2Server`, so every
frame of the protocol the gRPC layer relies on (flow control both ways,
settings, pings, header blocks split over CONTINUATION, padding, resets,
GOAWAY) is checked against an independent implementation, and the faults no
client library sends are written as raw frames.
"""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest

pytest.importorskip("cloudclients_emulator", reason="the emulator package (pip install -e emulator/) is needed")

from cloudclients_emulator import http2

SettingCodes = h2.settings.SettingCodes
SETTINGS = {
    SettingCodes.MAX_CONCURRENT_STREAMS: 100,
    SettingCodes.INITIAL_WINDOW_SIZE: 4 * 1024 * 1024,
    SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
}
REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/pkg.Svc/Call"), (b":authority", b"x"),
           (b"content-type", b"application/grpc"), (b"te", b"trailers")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">BHBBL", len(payload) >> 16, len(payload) & 0xFFFF, kind, flags, sid) + payload


class Pair:
    """An h2 client and our server, connected in memory."""

    def __init__(self, settings: dict[SettingCodes, int] | None = None, window: int = 16 * 1024 * 1024,
                 client_settings: dict[SettingCodes, int] | None = None) -> None:
        self.server = http2.H2Server(settings or SETTINGS, window)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        if client_settings:
            self.client.update_settings(client_settings)
        self.server_events: list[object] = []
        self.client_events: list[object] = []
        self.exchange()
        self.handshake = self.server_events
        self.server_events = []

    def to_server(self, data: bytes) -> list[object]:
        events = self.server.receive_data(data)
        self.server_events += events
        return events

    def exchange(self) -> None:
        """Pass bytes both ways until neither side has anything to say."""
        for _ in range(100):
            up = self.client.data_to_send()
            if up:
                self.to_server(up)
            down = self.server.data_to_send()
            if down:
                self.client_events += self.client.receive_data(down)
            if not up and not down:
                return
        raise AssertionError("the connection never went quiet")

    def of(self, kind: type, side: str = "server") -> list:  # type: ignore[type-arg]
        return [e for e in (self.server_events if side == "server" else self.client_events) if isinstance(e, kind)]

    def request(self, body: bytes = b"", end: bool = True, headers: list[tuple[bytes, bytes]] | None = None) -> int:
        sid: int = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, headers or REQUEST, end_stream=end and not body)
        if body:
            self.client.send_data(sid, body, end_stream=end)
        self.exchange()
        return sid


def test_a_unary_call_round_trip() -> None:
    pair = Pair()
    assert pair.of(h2.events.RemoteSettingsChanged, "client"), "the server's SETTINGS reached the client"
    assert pair.of(h2.events.SettingsAcknowledged, "client"), "the server acknowledged the client's SETTINGS"
    assert pair.client.remote_settings[SettingCodes.INITIAL_WINDOW_SIZE] == 4 * 1024 * 1024
    assert pair.client.outbound_flow_control_window == 16 * 1024 * 1024
    sid = pair.request(b"\x00\x00\x00\x00\x03abc")
    [request] = pair.of(http2.RequestReceived)
    assert request.stream_id == sid and request.headers == REQUEST
    [data] = pair.of(http2.DataReceived)
    assert (data.data, data.flow_controlled_length) == (b"\x00\x00\x00\x00\x03abc", 8)
    assert [e.stream_id for e in pair.of(http2.StreamEnded)] == [sid]
    pair.server.send_headers(sid, RESPONSE)
    pair.server.send_data(sid, b"\x00\x00\x00\x00\x02ok")
    pair.server.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
    pair.exchange()
    [response] = pair.of(h2.events.ResponseReceived, "client")
    assert response.headers == RESPONSE
    [received] = pair.of(h2.events.DataReceived, "client")
    assert received.data == b"\x00\x00\x00\x00\x02ok"
    [trailers] = pair.of(h2.events.TrailersReceived, "client")
    assert trailers.headers == [(b"grpc-status", b"0")]
    assert pair.of(h2.events.StreamEnded, "client")
    assert sid not in pair.server.streams, "a stream closed both ways is forgotten"
    with pytest.raises(h2.exceptions.StreamClosedError):
        pair.server.send_data(sid, b"late")


def test_headers_only_request_and_trailers_only_response() -> None:
    pair = Pair()
    sid = pair.request()
    assert [type(e) for e in pair.server_events] == [http2.RequestReceived, http2.StreamEnded]
    pair.server.send_headers(sid, [*RESPONSE, (b"grpc-status", b"12"), (b"grpc-message", b"nope %")],
                             end_stream=True)
    pair.exchange()
    [response] = pair.of(h2.events.ResponseReceived, "client")
    assert dict(response.headers)[b"grpc-message"] == b"nope %"
    assert pair.of(h2.events.StreamEnded, "client")


def test_ping_is_answered() -> None:
    pair = Pair()
    pair.client.ping(b"12345678")
    pair.exchange()
    [ack] = pair.of(h2.events.PingAckReceived, "client")
    assert ack.ping_data == b"12345678"


def test_responses_respect_the_clients_windows() -> None:
    pair = Pair(client_settings={SettingCodes.INITIAL_WINDOW_SIZE: 100})
    sid = pair.request(b"x")
    assert pair.server.local_flow_control_window(sid) == 100
    pair.server.send_headers(sid, RESPONSE)
    pair.server.send_data(sid, b"a" * 100)
    assert pair.server.local_flow_control_window(sid) == 0
    with pytest.raises(h2.exceptions.FlowControlError):
        pair.server.send_data(sid, b"b")
    pair.exchange()
    [data] = pair.of(h2.events.DataReceived, "client")
    pair.client.acknowledge_received_data(data.flow_controlled_length, sid)
    pair.client.increment_flow_control_window(1000, stream_id=sid)
    pair.exchange()
    updated = {e.stream_id for e in pair.of(http2.WindowUpdated)}
    assert sid in updated
    assert pair.server.local_flow_control_window(sid) >= 1000


def test_window_updates_are_reported_only_when_a_window_was_used_up() -> None:
    """Nothing can be waiting to send while a window is open: those updates (a gRPC client sends two per
    response) make no event."""
    pair = Pair()
    sid = pair.request(b"x", end=False)
    pair.client.increment_flow_control_window(1000, stream_id=sid)
    pair.client.increment_flow_control_window(1000)
    pair.exchange()
    assert not pair.of(http2.WindowUpdated)
    assert pair.server.local_flow_control_window(sid) == 65_535 + 1000


def test_a_new_initial_window_applies_to_open_streams() -> None:
    pair = Pair()
    sid = pair.request(b"x")
    assert pair.server.local_flow_control_window(sid) == 65_535
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 10})
    pair.exchange()
    [changed] = pair.of(http2.RemoteSettingsChanged)
    assert changed.changed_settings[SettingCodes.INITIAL_WINDOW_SIZE].new_value == 10
    assert pair.server.local_flow_control_window(sid) == 10
    assert pair.of(h2.events.SettingsAcknowledged, "client")


def test_the_connection_window_is_shared() -> None:
    pair = Pair()
    first, second = pair.request(b"x"), pair.request(b"y")
    for sid in (first, second):
        pair.server.send_headers(sid, RESPONSE)
    pair.server.send_data(first, b"a" * 16_384)
    pair.server.send_data(first, b"a" * 16_384)
    pair.server.send_data(first, b"a" * 16_384)
    pair.server.send_data(first, b"a" * 16_383)
    assert pair.server.local_flow_control_window(second) == 0, "the default connection window is used up"
    pair.exchange()
    for event in pair.of(h2.events.DataReceived, "client"):
        pair.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    pair.exchange()
    assert pair.server.local_flow_control_window(second) > 0
    assert any(e.stream_id == 0 for e in pair.of(http2.WindowUpdated))


def test_large_requests_reopen_the_windows() -> None:
    """10 MiB on one stream, more than the stream (4 MiB) and the connection (16 MiB... once) windows: the
    server's WINDOW_UPDATEs, sent as the application consumes the data, let it all through."""
    pair = Pair()
    sid: int = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, REQUEST)
    body = bytes(range(256)) * (40 * 1024)
    sent = received = 0
    for _ in range(10_000):
        if sent >= len(body):
            break
        window = min(pair.client.local_flow_control_window(sid), pair.client.max_outbound_frame_size)
        if window:
            chunk = body[sent:sent + window]
            sent += len(chunk)
            pair.client.send_data(sid, chunk, end_stream=sent >= len(body))
        for event in pair.to_server(pair.client.data_to_send()):
            if isinstance(event, http2.DataReceived):
                received += len(event.data)
                pair.server.acknowledge_received_data(event.flow_controlled_length, sid)
        pair.client_events += pair.client.receive_data(pair.server.data_to_send())
    assert sent == received == len(body)
    assert [e.stream_id for e in pair.of(http2.StreamEnded)] == [sid]


def test_header_blocks_over_a_frame_use_continuation() -> None:
    pair = Pair()
    big = (b"x-big", b"v" * 40_000)  # over the 16 KiB frame size, under the 64 KiB header list limit
    sid = pair.request(headers=[*REQUEST, big])
    [request] = pair.of(http2.RequestReceived)
    assert request.headers[-1] == big
    pair.server.send_headers(sid, [*RESPONSE, (b"grpc-status", b"3"), (b"grpc-status-details-bin", b"d" * 40_000)],
                             end_stream=True)
    pair.exchange()
    [response] = pair.of(h2.events.ResponseReceived, "client")
    assert dict(response.headers)[b"grpc-status-details-bin"] == b"d" * 40_000


def test_padding_and_priority_are_understood() -> None:
    pair = Pair()
    encoder = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True)).encoder
    block = encoder.encode(REQUEST)
    # HEADERS, padded (3 bytes) with a priority, END_HEADERS; then DATA padded (5 bytes), END_STREAM.
    pair.to_server(frame(1, 0x4 | 0x8 | 0x20, 1, b"\x03" + b"\x00\x00\x00\x00\x10" + block + b"\x00" * 3))
    pair.to_server(frame(0, 0x1 | 0x8, 1, b"\x05" + b"hello" + b"\x00" * 5))
    pair.to_server(frame(2, 0, 3, b"\x00\x00\x00\x01\x10"))  # PRIORITY for an idle stream: ignored
    pair.to_server(frame(0xFA, 0, 0, b"an extension"))  # an unknown frame type: ignored
    [request] = pair.of(http2.RequestReceived)
    assert request.headers == REQUEST
    [data] = pair.of(http2.DataReceived)
    assert (data.data, data.flow_controlled_length) == (b"hello", 11)
    assert pair.of(http2.StreamEnded)


def test_frames_may_arrive_a_byte_at_a_time() -> None:
    pair = Pair()
    sid: int = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, REQUEST)
    pair.client.send_data(sid, b"payload", end_stream=True)
    for byte in pair.client.data_to_send():
        pair.to_server(bytes((byte,)))
    assert [type(e) for e in pair.server_events] == [http2.RequestReceived, http2.DataReceived, http2.StreamEnded]


def test_a_client_reset_is_reported() -> None:
    pair = Pair()
    sid = pair.request(b"x", end=False)
    pair.client.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    pair.exchange()
    [reset] = pair.of(http2.StreamReset)
    assert (reset.stream_id, reset.error_code, reset.remote_reset) == (sid, h2.errors.ErrorCodes.CANCEL, True)
    with pytest.raises(h2.exceptions.StreamClosedError):
        pair.server.send_headers(sid, RESPONSE)


def test_the_server_may_reset_a_stream() -> None:
    pair = Pair()
    sid = pair.request(b"x", end=False)
    pair.server.reset_stream(sid, h2.errors.ErrorCodes.NO_ERROR)
    pair.exchange()
    [reset] = pair.of(h2.events.StreamReset, "client")
    assert reset.stream_id == sid
    # DATA the client had in flight is dropped (not reported, not answered).
    before = len(pair.server_events)
    assert pair.to_server(frame(0, 0, sid, b"z" * 16_000)) == []
    assert len(pair.server_events) == before and pair.server.data_to_send() == b""


def test_data_after_the_end_of_the_stream_is_a_stream_error() -> None:
    pair = Pair()
    sid = pair.request(b"x")
    pair.to_server(frame(0, 0, sid, b"more"))
    pair.exchange()
    [reset] = pair.of(h2.events.StreamReset, "client")
    assert reset.error_code == h2.errors.ErrorCodes.STREAM_CLOSED


def test_the_concurrent_stream_limit_refuses_more() -> None:
    pair = Pair(settings={**SETTINGS, SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    encoder = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True)).encoder
    for sid in (1, 3, 5):
        pair.to_server(frame(1, 0x4, sid, encoder.encode(REQUEST)))
    assert [e.stream_id for e in pair.of(http2.RequestReceived)] == [1, 3]
    assert frame(3, 0, 5, struct.pack(">L", h2.errors.ErrorCodes.REFUSED_STREAM)) in pair.server.data_to_send()


def test_after_goaway_new_streams_are_refused() -> None:
    pair = Pair()
    first = pair.request(b"x", end=False)
    pair.server.close_connection()
    pair.exchange()
    [goaway] = pair.of(h2.events.ConnectionTerminated, "client")
    assert goaway.last_stream_id == first
    encoder = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True)).encoder
    pair.to_server(frame(1, 0x4, first + 2, encoder.encode(REQUEST)))
    assert len(pair.of(http2.RequestReceived)) == 1
    pair.server.send_headers(first, RESPONSE)  # the open stream goes on


def test_a_header_table_size_change_is_acknowledged_in_the_next_block() -> None:
    pair = Pair()
    pair.client.update_settings({SettingCodes.HEADER_TABLE_SIZE: 0})
    pair.exchange()
    sid = pair.request(b"x")
    pair.server.send_headers(sid, RESPONSE, end_stream=True)
    out = pair.server.data_to_send()
    assert out[9] == 0x20, "the block starts with a dynamic table size update to 0"
    pair.client_events += pair.client.receive_data(out)
    assert pair.of(h2.events.ResponseReceived, "client")


def test_client_goaway_is_reported() -> None:
    pair = Pair()
    pair.client.close_connection()
    pair.exchange()
    [goaway] = pair.of(http2.ConnectionTerminated)
    assert goaway.error_code == 0


@pytest.mark.parametrize(("name", "data", "code"), [
    ("bad preface", b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n", h2.errors.ErrorCodes.PROTOCOL_ERROR),
    ("first frame not SETTINGS", http2.PREFACE + frame(6, 0, 0, b"12345678"), h2.errors.ErrorCodes.PROTOCOL_ERROR),
])
def test_a_bad_start_is_a_connection_error(name: str, data: bytes, code: int) -> None:
    server = http2.H2Server(SETTINGS)
    server.data_to_send()
    with pytest.raises(h2.exceptions.ProtocolError):
        server.receive_data(data)
    out = server.data_to_send()
    assert out[3] == 7 and struct.unpack(">L", out[13:17])[0] == code, "a GOAWAY with the error"


@pytest.mark.parametrize(("name", "raw", "code"), [
    ("DATA on an idle stream", frame(0, 0, 7, b"x"), h2.errors.ErrorCodes.PROTOCOL_ERROR),
    ("DATA on stream 0", frame(0, 0, 0, b"x"), h2.errors.ErrorCodes.PROTOCOL_ERROR),
    ("a frame over the size limit", frame(0, 0, 1, b"x" * 16_385), h2.errors.ErrorCodes.FRAME_SIZE_ERROR),
    ("a short PING", frame(6, 0, 0, b"1234"), h2.errors.ErrorCodes.FRAME_SIZE_ERROR),
    ("a zero connection WINDOW_UPDATE", frame(8, 0, 0, b"\x00\x00\x00\x00"), h2.errors.ErrorCodes.PROTOCOL_ERROR),
    ("a connection window overflow", frame(8, 0, 0, b"\x7f\xff\xff\xff"), h2.errors.ErrorCodes.FLOW_CONTROL_ERROR),
    ("a stray CONTINUATION", frame(9, 0x4, 1, b""), h2.errors.ErrorCodes.PROTOCOL_ERROR),
    ("PUSH_PROMISE from a client", frame(5, 0x4, 1, b"\x00\x00\x00\x02"), h2.errors.ErrorCodes.PROTOCOL_ERROR),
    ("a bad header block", frame(1, 0x4, 1, b"\xff\xff\xff\xff\xff"), h2.errors.ErrorCodes.COMPRESSION_ERROR),
    ("an even stream id", frame(1, 0x4, 2, b"\x83"), h2.errors.ErrorCodes.PROTOCOL_ERROR),
    ("a bad SETTINGS length", frame(4, 0, 0, b"\x00\x04\x00"), h2.errors.ErrorCodes.FRAME_SIZE_ERROR),
    ("ENABLE_PUSH of 2", frame(4, 0, 0, b"\x00\x02\x00\x00\x00\x02"), h2.errors.ErrorCodes.PROTOCOL_ERROR),
    ("MAX_FRAME_SIZE too small", frame(4, 0, 0, b"\x00\x05\x00\x00\x00\x10"), h2.errors.ErrorCodes.PROTOCOL_ERROR),
])
def test_protocol_violations_end_the_connection(name: str, raw: bytes, code: int) -> None:
    pair = Pair()
    with pytest.raises(h2.exceptions.ProtocolError):
        pair.to_server(raw)
    pair.client_events += pair.client.receive_data(pair.server.data_to_send())
    [goaway] = pair.of(h2.events.ConnectionTerminated, "client")
    assert goaway.error_code == code
    assert pair.server.receive_data(frame(6, 0, 0, b"12345678")) == [], "nothing more is read"


def test_data_beyond_the_connection_window_ends_the_connection() -> None:
    pair = Pair(window=65_535)
    encoder = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True)).encoder
    pair.to_server(frame(1, 0x4, 1, encoder.encode(REQUEST)))
    for _ in range(3):
        pair.to_server(frame(0, 0, 1, b"x" * 16_384))
    with pytest.raises(h2.exceptions.ProtocolError):
        pair.to_server(frame(0, 0, 1, b"x" * 16_384))


def test_hpack_decoding_follows_an_independent_encoder() -> None:
    """Blocks from ``hpack``'s encoder (Huffman or not, fields added to the dynamic table and evicted from it,
    table size updates, never-indexed fields) decode to what was encoded, including blocks seen before
    while the table changed under them (the decoder's cache)."""
    import random

    import hpack

    rng = random.Random(7)
    encoder = hpack.Encoder()
    decoder = http2.HpackDecoder(4096, 1 << 20)
    names = [b"x-a", b"x-b", b"grpc-timeout", b"content-type", b":path", b"user-agent", b"x-" + b"n" * 40]
    seen: set[bytes] = set()
    for round_no in range(600):
        if round_no == 200:
            encoder.header_table_size = 256  # a size update in the next block; entries evicted
        if round_no == 400:
            encoder.header_table_size = 4096
        headers: list[tuple[bytes, bytes]] = [(b":method", b"POST"), (b":path", b"/p.S/M")]
        for _ in range(rng.randrange(0, 6)):
            headers.append((rng.choice(names), rng.choice([b"1", b"60S", b"v" * rng.randrange(0, 300), b"\xff\x00"])))
        sensitive = rng.random() < 0.2
        huffman = rng.random() < 0.5
        for _ in range(rng.randrange(1, 4)):  # repeated, as a client repeats a call: cached blocks
            block = encoder.encode([hpack.NeverIndexedHeaderTuple(n, v) if sensitive else (n, v) for n, v in headers],
                                   huffman=huffman)
            seen.add(block)
            assert [(bytes(n), bytes(v)) for n, v in decoder.decode(block)] == headers
    assert len(seen) < 1200, "some blocks were repeated"


@pytest.mark.parametrize(("name", "block"), [
    ("index 0", b"\x80"),
    ("an index past the tables", b"\xff\x00"),
    ("a truncated string", b"\x00\x05ab"),
    ("a truncated integer", b"\x7f"),
    ("a size update over the maximum", b"\x3f\xe2\x1f"),
    ("a size update after a field", b"\x82\x20"),
])
def test_hpack_decoding_refuses_malformed_blocks(name: str, block: bytes) -> None:
    from hpack.exceptions import HPACKDecodingError

    with pytest.raises(HPACKDecodingError):
        http2.HpackDecoder(4096).decode(block)


def test_hpack_decoding_bounds_the_header_list() -> None:
    decoder = http2.HpackDecoder(4096, 100)
    for _ in range(2):  # the same block again: refused again (not served from the cache)
        with pytest.raises(http2.OversizedHeaderListError):
            decoder.decode(b"\x00\x01a\x7f\x01" + b"v" * 128)


def test_hpack_decoding_stops_at_the_header_list_limit() -> None:
    """Refused as soon as the list passes the limit, not after the whole block: 4,000 one-byte references
    (152,000 bytes of list) and then a malformed field, which is never reached. (255 KiB of references
    expand to 6.7 MB of header list: decoding all of it first cost seconds of CPU per block.)"""
    decoder = http2.HpackDecoder(4096, 65_536)
    with pytest.raises(http2.OversizedHeaderListError):
        decoder.decode(b"\x84" * 4_000 + b"\x80")  # 0x84: static ':path /'; 0x80: index 0, malformed


def test_a_flood_of_continuation_frames_ends_the_connection() -> None:
    """One-byte CONTINUATION frames, each copying the growing block, are refused after 64 frames, long
    before the byte limit (256 KiB) would stop them (the 2024 "CONTINUATION flood")."""
    pair = Pair()
    pair.to_server(frame(1, 0, 1, b"\x83"))  # HEADERS without END_HEADERS
    for _ in range(64):
        pair.to_server(frame(9, 0, 1, b"\x86"))
    with pytest.raises(h2.exceptions.ProtocolError):
        pair.to_server(frame(9, 0, 1, b"\x86"))
    pair.client_events += pair.client.receive_data(pair.server.data_to_send())
    [goaway] = pair.of(h2.events.ConnectionTerminated, "client")
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_a_legal_header_block_split_in_small_frames_is_read() -> None:
    """The CONTINUATION bound leaves room for what clients send: a 40 KB header in 1 KiB frames."""
    import hpack

    pair = Pair()
    block = hpack.Encoder().encode([*REQUEST, (b"x-big", b"v" * 40_000)], huffman=False)
    parts = [block[i:i + 1024] for i in range(0, len(block), 1024)]
    pair.to_server(frame(1, 0x1, 1, parts[0]))
    for i, part in enumerate(parts[1:], 2):
        pair.to_server(frame(9, 0x4 if i == len(parts) else 0, 1, part))
    [request] = pair.of(http2.RequestReceived)
    assert request.headers[-1] == (b"x-big", b"v" * 40_000)


def test_big_header_blocks_are_not_kept_for_the_connections_life() -> None:
    """The server caches the header blocks a client repeats (decoding) and the header lists it answers with
    (encoding). Big ones -- 64 calls with 60 KB paths, answered with trailers that echo the path -- are not
    kept: memory held afterwards stays small. (Before: ~15 MB held per idle connection.)"""
    import gc
    import tracemalloc

    import hpack

    pair = Pair()
    encoder = hpack.Encoder()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(64):
            path = b"/%d/" % i + b"m" * 60_000
            headers = [hpack.NeverIndexedHeaderTuple(n, v) for n, v in REQUEST if n != b":path"]
            block = encoder.encode([hpack.NeverIndexedHeaderTuple(b":path", path), *headers], huffman=False)
            parts = [block[j:j + 16_384] for j in range(0, len(block), 16_384)]
            sid = 2 * i + 1
            events = pair.server.receive_data(frame(1, 0x1, sid, parts[0]) + b"".join(
                frame(9, 0x4 if k == len(parts) - 1 else 0, sid, p) for k, p in enumerate(parts[1:], 1)))
            assert [type(e) for e in events] == [http2.RequestReceived, http2.StreamEnded]
            pair.server.send_headers(sid, [*RESPONSE, (b"grpc-status", b"12"), (b"grpc-message", path)],
                                     end_stream=True)
            pair.server.data_to_send()
            del events, block, parts, path
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1_000_000, f"{held:,} bytes held after the calls ended"


def test_a_malformed_priority_frame_resets_its_stream_and_says_so() -> None:
    """A PRIORITY frame of the wrong length is a stream error: the stream is reset (RST_STREAM
    FRAME_SIZE_ERROR to the client) and the reset is reported, so the gRPC layer forgets the call (it
    stayed open for the connection's life, counted as an open stream)."""
    pair = Pair()
    sid = pair.request(end=False)
    pair.to_server(frame(2, 0, sid, b"\x00\x00\x00\x00"))  # 4 bytes, not 5
    [reset] = pair.of(http2.StreamReset)
    assert (reset.stream_id, reset.error_code, reset.remote_reset) == (sid, h2.errors.ErrorCodes.FRAME_SIZE_ERROR,
                                                                       False)
    pair.client_events += pair.client.receive_data(pair.server.data_to_send())
    [seen] = pair.of(h2.events.StreamReset, "client")
    assert seen.stream_id == sid and seen.error_code == h2.errors.ErrorCodes.FRAME_SIZE_ERROR
