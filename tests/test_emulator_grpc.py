"""The emulator's gRPC layer against bytes no gRPC library sends: bad messages, oversized prefixes,
bad compression, unconsumed floods.

grpcio cannot produce these faults (it frames and compresses correctly and
queues streams beyond the server's limit), so these tests speak HTTP/2 with
the bare client in :mod:`tests.rawh2`; subscriptions are made over REST.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from google.pubsub_v1.types import StreamingPullRequest

from tests.emulator_proc import PROJECT, emulator, http
from tests.helpers import wait_for
from tests.rawh2 import RawH2

pytest.importorskip("cloudclients_emulator", reason="the emulator package (pip install -e emulator/) is needed")

STREAMING_PULL = b"/google.pubsub.v1.Subscriber/StreamingPull"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/raw-sub"


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    """A fresh emulator with one topic and subscription (``SUBSCRIPTION``)."""
    with emulator() as (_, env):
        base = f"http://{env['PUBSUB_EMULATOR_HOST']}/v1/projects/{PROJECT}"
        assert http(f"{base}/topics/raw-topic", "PUT", {})[0] == 200
        assert http(f"{base}/subscriptions/raw-sub", "PUT", {"topic": f"projects/{PROJECT}/topics/raw-topic"})[0] == 200
        yield env


def connect(env: dict[str, str]) -> RawH2:
    host, port = env["PUBSUB_EMULATOR_HOST"].rsplit(":", 1)
    return RawH2(host, int(port))


def open_streams(env: dict[str, str]) -> int:
    status, stats = http(f"http://{env['PUBSUB_EMULATOR_HOST']}/admin/stats")
    assert status == 200
    return int(stats["open_streams"])


FIRST = StreamingPullRequest.serialize(StreamingPullRequest(subscription=SUBSCRIPTION, stream_ack_deadline_seconds=10))


@pytest.mark.parametrize(("fault", "status"), [
    ("unparsable", 3),   # INVALID_ARGUMENT
    ("oversized", 8),    # RESOURCE_EXHAUSTED
    ("bad-gzip", 13),    # INTERNAL
])
def test_a_stream_the_grpc_layer_ends_is_forgotten(env: dict[str, str], fault: str, status: int) -> None:
    """An open StreamingPull that then sends a message the gRPC layer refuses (unparsable, a length prefix
    over the 20 MiB limit, or compressed data that does not inflate) ends with that status, and the
    emulator stops counting it as open (its handler used to stay registered for ever)."""
    raw = connect(env)
    try:
        sid = raw.start(STREAMING_PULL, ((b"grpc-encoding", b"gzip"),))
        raw.message(sid, FIRST)
        assert wait_for(lambda: open_streams(env) == 1, 10)
        if fault == "unparsable":
            raw.message(sid, b"\xff\xff\xff")
        elif fault == "oversized":
            raw.send(sid, b"\x00" + (21 * 1024 * 1024).to_bytes(4, "big"))
        else:
            raw.message(sid, b"this is not gzip", compressed=True)
        assert raw.read_until(lambda: raw.status(sid) is not None, 10)
        assert raw.status(sid) == status
        assert wait_for(lambda: open_streams(env) == 0, 10), "the ended stream is still counted as open"
    finally:
        raw.close()


PUBLISH = b"/google.pubsub.v1.Publisher/Publish"
GET_TOPIC = b"/google.pubsub.v1.Publisher/GetTopic"


def test_unfinished_request_bytes_per_connection_are_capped(env: dict[str, str]) -> None:
    """Four Publish calls on one connection each send 17 MiB of a message announced as 19 MiB (legal: under
    the 20 MiB message limit) and never finish it. Past 64 MiB held for the connection, the call whose bytes
    cross the line ends with RESOURCE_EXHAUSTED and is reset, its bytes dropped; the others, and new calls
    on the connection, go on. (Before, every byte was held: 100,000 streams x 20 MiB per connection.)"""
    raw = connect(env)
    try:
        part = b"\x00" + (19 * 1024 * 1024).to_bytes(4, "big") + b"\x00" * (17 * 1024 * 1024)
        sids = []
        for _ in range(4):
            sids.append(raw.start(PUBLISH))
            raw.send(sids[-1], part)
        assert raw.read_until(lambda: raw.status(sids[-1]) is not None, 60), "the fourth call is still open"
        assert raw.status(sids[-1]) == 8  # RESOURCE_EXHAUSTED
        assert raw.streams[sids[-1]].reset is not None
        assert all(raw.status(sid) is None and raw.streams[sid].reset is None for sid in sids[:-1])
        probe = raw.start(GET_TOPIC)
        raw.message(probe, b"\x0a\x05topic", end=True)  # GetTopicRequest(topic="topic")
        assert raw.read_until(lambda: raw.status(probe) is not None, 60)
        assert raw.status(probe) == 3  # INVALID_ARGUMENT (a bad name): answered, the connection is fine
    finally:
        raw.close()


def test_concurrent_streams_per_connection_are_bounded(env: dict[str, str]) -> None:
    """The server advertises a bounded SETTINGS_MAX_CONCURRENT_STREAMS (each open stream costs memory), but
    high enough for 1,000+ StreamingPulls on one channel (a stock client queues streams beyond it)."""
    raw = connect(env)
    try:
        assert raw.read_until(lambda: 0x3 in raw.settings, 5)
        assert 2_000 <= raw.settings[0x3] <= 10_000
    finally:
        raw.close()


@pytest.mark.parametrize(("path", "content_type"), [
    (GET_TOPIC, b"text/plain"),  # answered 415
    (b"/google.pubsub.v1.Publisher/NoSuchMethod", b"application/grpc"),  # answered UNIMPLEMENTED
])
def test_a_request_reset_in_the_same_write_as_its_refusal_keeps_the_connection(
        env: dict[str, str], path: bytes, content_type: bytes) -> None:
    """A request the server refuses at once, and the client's RST_STREAM for it, arrive in one read: the
    refusal finds the stream closed. The connection and its other calls go on. (Before, the error escaped
    the protocol and asyncio dropped the connection with everything on it.)"""
    raw = connect(env)
    try:
        assert raw.read_until(lambda: 0x3 in raw.settings, 5)
        sid = raw.conn.get_next_available_stream_id()
        raw.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
                                    (b":authority", b"emulator"), (b"content-type", content_type)])
        raw.conn.reset_stream(sid)
        raw.flush()  # HEADERS and RST_STREAM in one write
        probe = raw.start(GET_TOPIC)
        raw.message(probe, b"\x0a\x05topic", end=True)
        assert raw.read_until(lambda: raw.status(probe) is not None, 20), "the connection was dropped"
        assert raw.status(probe) == 3
    finally:
        raw.close()


def test_a_client_that_never_reads_is_not_buffered_for(env: dict[str, str]) -> None:
    """A client sends PINGs and never reads the acks. Flow control does not cover acks; once the server's
    write buffer is full it stops reading that connection (back-pressure) instead of buffering acks in
    memory without bound, and other connections are served meanwhile. (Before: 64 MB of PINGs read,
    64 MB of acks held.)"""
    import socket

    raw = connect(env)
    try:
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        pings = (b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678") * 60_000  # 1 MB of PING frames
        raw.sock.settimeout(3)
        sent, stalled = 0, False
        while sent < 64 * len(pings):
            try:
                raw.sock.sendall(pings)
            except TimeoutError:
                stalled = True
                break
            sent += len(pings)
        assert stalled, f"{sent:,} bytes of PINGs were read with nothing read back"
        other = connect(env)
        try:
            probe = other.start(GET_TOPIC)
            other.message(probe, b"\x0a\x05topic", end=True)
            assert other.read_until(lambda: other.status(probe) is not None, 20)
            assert other.status(probe) == 3
        finally:
            other.close()
    finally:
        raw.close()


def test_a_stream_to_a_client_that_never_reads_stops_taking_messages(env: dict[str, str]) -> None:
    """A client opens every HTTP/2 window to 2 GiB (legal: flow control then bounds nothing), starts a
    StreamingPull without flow control over a backlog of 60 x 1 MB, and never reads. Responses stay queued
    in the call once the socket's buffer is full, so the stream stops taking messages from the backlog: most
    stay there, not copied into the server's memory. (Before: all 60 leased and buffered.)"""
    import base64
    import socket

    import h2.settings

    base = f"http://{env['PUBSUB_EMULATOR_HOST']}/v1/projects/{PROJECT}"
    data = base64.b64encode(b"m" * 1_000_000).decode()
    for _ in range(20):
        assert http(f"{base}/topics/raw-topic:publish", "POST", {"messages": [{"data": data}] * 3})[0] == 200
    raw = connect(env)
    try:
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        raw.flush()
        sid = raw.start(STREAMING_PULL)
        raw.message(sid, StreamingPullRequest.serialize(StreamingPullRequest(
            subscription=SUBSCRIPTION, stream_ack_deadline_seconds=60)))

        def leased() -> int:
            status, stats = http(f"http://{env['PUBSUB_EMULATOR_HOST']}/admin/stats")
            assert status == 200
            return int(stats["subscriptions"][SUBSCRIPTION]["outstanding"])

        assert wait_for(lambda: leased() > 0, 10), "the stream got nothing"
        time.sleep(3)  # time to take everything, were nothing stopping it
        assert leased() <= 30, f"{leased()} of 60 messages leased to a client that reads nothing"
    finally:
        raw.close()
