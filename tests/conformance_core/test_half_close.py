"""A StreamingPull the client half-closes: the service keeps streaming until the client cancels
(or the service ends the stream itself, never with OK)."""

from __future__ import annotations

import grpc
import pytest

from tests.conformance_core.conftest import Target, xfail_official
from tests.conformance_core.rawstream import RawStream
from tests.conformance_core.test_streaming import publish
from tests.helpers import wait_for


def test_a_half_closed_stream_keeps_delivering(request: pytest.FixtureRequest, target: Target) -> None:
    xfail_official(request, target, "the official emulator stops delivering to a half-closed stream")
    topic = target.topic()
    sub = target.subscription(topic)
    stream = RawStream(target, sub)
    stream.half_close()  # the first request, then no more
    try:
        publish(target, topic, 1)
        assert wait_for(lambda: len(stream.received) == 1, 10), "delivered after the half-close"
        assert not stream.done.is_set()
    finally:
        stream.cancel()


def test_a_stream_closed_before_any_request_is_refused(request: pytest.FixtureRequest, target: Target) -> None:
    """Nothing to stream without a subscription: refused like an empty first request, never ended OK."""
    xfail_official(request, target, "the official emulator ends such a stream with OK")
    stream = RawStream(target, None)
    try:
        assert stream.done.wait(10), "the stream goes on"
        assert stream.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        stream.cancel()
