"""Exactly-once delivery: the setting round-trips, and acks and modacks report per ack id.

The service fails an Acknowledge or ModifyAckDeadline on such a subscription
that names an ack id it no longer leases, with a ``google.rpc.ErrorInfo`` in the
status details mapping that id to ``PERMANENT_FAILURE_INVALID_ACK_ID``; the
client library turns that into ``ack_with_response()``'s result. Every
StreamingPull response says ``exactly_once_delivery_enabled`` so the client
switches to that mode.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud.pubsub_v1.subscriber import exceptions as sub_exceptions
from google.cloud.pubsub_v1.subscriber._protocol import streaming_pull_manager
from google.protobuf import field_mask_pb2

from tests.conformance_core.conftest import Target, xfail_official
from tests.conformance_core.rawstream import RawStream
from tests.conformance_core.test_streaming import publish
from tests.helpers import wait_for


def test_the_setting_round_trips(target: Target) -> None:
    topic = target.topic()
    sub = target.subscription(topic, enable_exactly_once_delivery=True)
    assert target.subscriber.get_subscription(subscription=sub).enable_exactly_once_delivery
    target.subscriber.update_subscription(request={
        "subscription": {"name": sub, "enable_exactly_once_delivery": False},
        "update_mask": field_mask_pb2.FieldMask(paths=["enable_exactly_once_delivery"])})
    assert not target.subscriber.get_subscription(subscription=sub).enable_exactly_once_delivery


def test_an_ack_id_no_longer_leased_is_refused_per_ack_id(target: Target) -> None:
    """A unary Acknowledge of a nacked message's ack id fails, naming that ack id in ErrorInfo."""
    topic = target.topic()
    sub = target.subscription(topic, enable_exactly_once_delivery=True)
    publish(target, topic, 1)
    got = target.subscriber.pull(subscription=sub, max_messages=1, timeout=10)
    ack_id = got.received_messages[0].ack_id
    target.subscriber.modify_ack_deadline(subscription=sub, ack_ids=[ack_id], ack_deadline_seconds=0)
    with pytest.raises(exceptions.GoogleAPICallError) as info:
        target.subscriber.acknowledge(subscription=sub, ack_ids=[ack_id])
    assert streaming_pull_manager._get_ack_errors(info.value) == {ack_id: "PERMANENT_FAILURE_INVALID_ACK_ID"}


def test_ack_with_response_through_subscribe(target: Target) -> None:
    """The client sees exactly-once mode; an ack of a live lease succeeds, one after a nack is INVALID_ACK_ID,
    and an acked message is not delivered again."""
    topic = target.topic()
    sub = target.subscription(topic, enable_exactly_once_delivery=True)
    publish(target, topic, 2)
    results: dict[bytes, Any] = {}
    seen: list[bytes] = []
    lock = threading.Lock()

    def callback(message: Any) -> None:
        with lock:
            seen.append(message.data)
        if message.data == b"m0":
            results[b"m0"] = message.ack_with_response().result(timeout=20)
        elif message.data == b"m1" and b"m1" not in results:
            message.nack_with_response().result(timeout=20)
            try:
                message.ack_with_response().result(timeout=20)
                results[b"m1"] = "acked"
            except sub_exceptions.AcknowledgeError as exc:
                results[b"m1"] = exc.error_code
        else:  # m1 again, after the nack
            message.ack()

    future = target.subscriber.subscribe(sub, callback)
    try:
        assert wait_for(lambda: len(results) == 2 and seen.count(b"m1") >= 2, 30), (results, seen)
    finally:
        future.cancel()
        future.result(timeout=10)
    assert results[b"m0"] is sub_exceptions.AcknowledgeStatus.SUCCESS
    assert results[b"m1"] is sub_exceptions.AcknowledgeStatus.INVALID_ACK_ID
    assert seen.count(b"m0") == 1


def test_stream_acks_and_modacks_are_confirmed(request: pytest.FixtureRequest, target: Target) -> None:
    """On an exactly-once subscription, an ack sent on the stream is answered with
    ``acknowledge_confirmation`` (StreamingPullResponse field 5) and a lease change with
    ``modify_ack_deadline_confirmation`` (field 3), each naming the ack ids that took effect and those
    that did not."""
    xfail_official(request, target, "the official emulator confirms lease changes on the stream "
                   "but sends no acknowledge_confirmation")
    topic = target.topic()
    sub = target.subscription(topic, enable_exactly_once_delivery=True)
    publish(target, topic, 2)
    stream = RawStream(target, sub)
    try:
        assert wait_for(lambda: len(stream.received) == 2, 20)
        (first, _), (second, _) = stream.received
        target.subscriber.modify_ack_deadline(subscription=sub, ack_ids=[second], ack_deadline_seconds=0)
        stream.send(modify_deadline_ack_ids=[first, second], modify_deadline_seconds=[30, 30])
        assert wait_for(lambda: any(r.modify_ack_deadline_confirmation.ack_ids for r in stream.responses), 10)
        stream.send(ack_ids=[first, second])
        assert wait_for(lambda: any(r.acknowledge_confirmation.ack_ids for r in stream.responses), 10)
    finally:
        stream.cancel()
    with stream.lock:
        modacks = [r.modify_ack_deadline_confirmation for r in stream.responses
                   if r.modify_ack_deadline_confirmation.ack_ids]
        acks = [r.acknowledge_confirmation for r in stream.responses if r.acknowledge_confirmation.ack_ids]
    assert [(list(m.ack_ids), list(m.invalid_ack_ids)) for m in modacks] == [([first], [second])]
    assert [(list(a.ack_ids), list(a.invalid_ack_ids)) for a in acks] == [([first], [second])]
