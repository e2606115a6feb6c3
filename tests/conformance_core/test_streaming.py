"""StreamingPull through the real client's subscribe(): cancel, reconnect, flow control."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from google.cloud import pubsub_v1

from tests.conformance_core.conftest import Target, xfail_official
from tests.helpers import wait_for


class Collector:
    """A subscribe() callback that records (and optionally acks) what arrives."""

    def __init__(self, ack: bool) -> None:
        self.ack = ack
        self.lock = threading.Lock()
        self.data: list[bytes] = []
        self.held: list[Any] = []
        self.max_held = 0

    def __call__(self, message: Any) -> None:
        with self.lock:
            self.data.append(message.data)
            if self.ack:
                message.ack()
            else:
                self.held.append(message)
                self.max_held = max(self.max_held, len(self.held))

    def wait(self, count: int, timeout: float) -> bool:
        def enough() -> bool:
            with self.lock:
                return len(set(self.data)) >= count

        return wait_for(enough, timeout, interval=0.05)


def publish(target: Target, topic: str, n: int, prefix: str = "m") -> set[bytes]:
    futures = [target.publisher.publish(topic, f"{prefix}{i}".encode()) for i in range(n)]
    for f in futures:
        f.result(timeout=10)
    return {f"{prefix}{i}".encode() for i in range(n)}


def test_streaming_receive_all(target: Target) -> None:
    topic = target.topic()
    sub = target.subscription(topic)
    sent = publish(target, topic, 50)
    collector = Collector(ack=True)
    future = target.subscriber.subscribe(sub, collector)
    try:
        assert collector.wait(50, 20)
    finally:
        future.cancel()
        future.result(timeout=10)
    assert set(collector.data) == sent


def test_cancelled_subscribers_messages_come_back(request: pytest.FixtureRequest, target: Target) -> None:
    """A subscriber takes 20 messages, acks none and is cancelled (as every shutdown does).
    A new subscriber on the same subscription must get all 20, once their leases run out
    (they stay valid after the stream is gone, as the service's do)."""
    xfail_official(request, target, "the official emulator keeps delivering to a cancelled StreamingPull, "
                   "so a new subscriber gets only some messages", strict=False)
    topic = target.topic()
    sub = target.subscription(topic, ack_deadline_seconds=10)
    sent = publish(target, topic, 20)
    first = Collector(ack=False)
    future = target.subscriber.subscribe(sub, first)
    assert first.wait(20, 20)
    future.cancel()
    future.result(timeout=10)
    second = Collector(ack=True)
    future = target.subscriber.subscribe(sub, second)
    try:
        got_all = second.wait(20, 45)  # the client's leases last 10 s from its last extension
    finally:
        future.cancel()
        future.result(timeout=10)
    assert got_all and set(second.data) == sent, f"{len(set(second.data))} of 20"


def test_subscriber_reconnects_after_the_server_breaks_streams(target: Target) -> None:
    """Our emulator's admin API ends every stream with UNAVAILABLE; the same subscriber keeps receiving."""
    if target.kind == "official":
        pytest.skip("the official emulator has no way to break open streams")
    topic = target.topic()
    sub = target.subscription(topic)
    collector = Collector(ack=True)
    future = target.subscriber.subscribe(sub, collector)
    try:
        sent = publish(target, topic, 5, "before")
        assert collector.wait(5, 15)
        assert target.admin("POST", "/admin/break-streams")["broken"] >= 1
        sent |= publish(target, topic, 5, "after")
        assert collector.wait(10, 20), collector.data
        assert not future.done()
    finally:
        future.cancel()
        future.result(timeout=10)
    assert set(collector.data) == sent


def test_flow_control_limits_outstanding_messages(target: Target) -> None:
    """max_messages=5: never more than 5 unacked messages in the callback at once."""
    topic = target.topic()
    sub = target.subscription(topic, ack_deadline_seconds=60)
    publish(target, topic, 30)
    collector = Collector(ack=False)
    future = target.subscriber.subscribe(sub, collector, flow_control=pubsub_v1.types.FlowControl(max_messages=5))
    try:
        assert collector.wait(5, 15)
        time.sleep(1.0)
        with collector.lock:
            assert collector.max_held == 5
            for message in collector.held:
                message.ack()
            collector.held.clear()
        assert collector.wait(10, 15)
    finally:
        future.cancel()
        future.result(timeout=10)
