"""A bare HTTP/2 gRPC client on the ``h2`` library, for the faults no gRPC client library sends.

grpcio frames every message correctly, never leaves one half-sent and queues
streams beyond the server's limit; the tests of how the emulator's gRPC layer
copes with bad framing, oversized or badly compressed messages and floods of
unconsumed bytes need exactly those bytes on the wire, so they use this.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions


@dataclass
class StreamSeen:
    """What the server sent on one stream."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    reset: int | None = None  # the RST_STREAM error code
    ended: bool = False


class RawH2:
    """One HTTP/2 connection speaking just enough gRPC: start calls, send frames, read what comes back."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(1 << 30)
        self.streams: dict[int, StreamSeen] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.eof = False
        self.settings: dict[int, int] = {}
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def start(self, path: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> int:
        """Open a call (HEADERS only); its stream id."""
        sid: int = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
                                     (b":authority", b"emulator"), (b"content-type", b"application/grpc"),
                                     (b"te", b"trailers"), *extra])
        self.streams[sid] = StreamSeen()
        self.flush()
        return sid

    def message(self, sid: int, payload: bytes, *, compressed: bool = False, end: bool = False) -> None:
        """Send one length-prefixed gRPC message."""
        self.send(sid, bytes((int(compressed),)) + len(payload).to_bytes(4, "big") + payload, end=end)

    def send(self, sid: int, data: bytes, *, end: bool = False) -> None:
        """Send raw DATA bytes, as far as the server's flow-control window allows (reading meanwhile)."""
        sent = 0
        while sent < len(data) or (not data and sent == 0):
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if data and window <= 0:
                self.read(0.05)
                if self.streams[sid].reset is not None or self.eof:
                    return
                continue
            chunk = data[sent:sent + window]
            sent += len(chunk)
            self.conn.send_data(sid, chunk, end_stream=end and sent >= len(data))
            self.flush()
            if not data:
                break

    def read(self, seconds: float) -> None:
        """Read and handle whatever arrives for *seconds* (or until the server closes)."""
        deadline = time.monotonic() + seconds
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                return
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.eof = True
                return
            for event in events:
                self._handle(event)
            self.flush()

    def read_until(self, done: object, seconds: float) -> bool:
        """Read until ``done()`` is true, the server closes, or *seconds* pass; ``done()``'s last value."""
        assert callable(done)
        deadline = time.monotonic() + seconds
        while not done() and not self.eof and time.monotonic() < deadline:
            self.read(min(0.05, max(deadline - time.monotonic(), 0)))
        return bool(done())

    def _handle(self, event: object) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.streams[event.stream_id].headers = list(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            self.streams[event.stream_id].trailers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.streams[event.stream_id].data += event.data
            if event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams.setdefault(event.stream_id, StreamSeen()).reset = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings.update({int(k): v.new_value for k, v in event.changed_settings.items()})

    def status(self, sid: int) -> int | None:
        """The call's grpc-status (trailers, or a trailers-only response), if it ended with one."""
        seen = self.streams[sid]
        value = seen.trailers.get(b"grpc-status") or dict(seen.headers).get(b"grpc-status")
        return int(value) if value is not None else None

    def close(self) -> None:
        self.sock.close()
