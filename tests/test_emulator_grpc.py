"""The emulator's gRPC layer against bytes no gRPC library sends: bad messages, oversized prefixes,
bad compression, unconsumed floods.

grpcio cannot produce these faults (it frames and compresses correctly and
queues streams beyond the server's limit), so these tests speak HTTP/2 with
the bare client in :mod:`tests.rawh2`; subscriptions are made over REST.
"""

from __future__ import annotations

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
