"""Requests the service refuses whole: a bad UpdateSubscription, bad later StreamingPull requests,
undecodable ack ids; and what it accepts that looks odd (negative flow control: no limit)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.protobuf import field_mask_pb2
from google.pubsub_v1.types import StreamingPullRequest

from tests.conformance_core.conftest import Target, xfail_official
from tests.conformance_core.rawstream import RawStream
from tests.conformance_core.test_streaming import publish
from tests.helpers import wait_for


def test_a_refused_update_changes_nothing(request: pytest.FixtureRequest, target: Target) -> None:
    xfail_official(request, target, "the official emulator applies the valid fields of a refused UpdateSubscription")
    topic = target.topic()
    sub = target.subscription(topic, ack_deadline_seconds=20)
    with pytest.raises(exceptions.InvalidArgument):
        target.subscriber.update_subscription(request={
            "subscription": {"name": sub, "ack_deadline_seconds": -30, "retain_acked_messages": True},
            "update_mask": field_mask_pb2.FieldMask(paths=["retain_acked_messages", "ack_deadline_seconds"])})
    got = target.subscriber.get_subscription(subscription=sub)
    assert got.ack_deadline_seconds == 20
    assert not got.retain_acked_messages


LATER_REQUESTS: dict[str, dict[str, Any]] = {
    "stream_ack_deadline_seconds=-5": {"stream_ack_deadline_seconds": -5},
    "stream_ack_deadline_seconds=700": {"stream_ack_deadline_seconds": 700},
    "modify_deadline_seconds=-1": {"modify_deadline_ack_ids": ["ACK"], "modify_deadline_seconds": [-1]},
    "modify_deadline_seconds=601": {"modify_deadline_ack_ids": ["ACK"], "modify_deadline_seconds": [601]},
    "two ack ids, one deadline": {"modify_deadline_ack_ids": ["ACK", "ACK"], "modify_deadline_seconds": [30]},
    "garbage ack id": {"ack_ids": ["not an ack id"]},
    # The proto: subscription "must not be set in subsequent requests"; the flow-control fields and
    # protocol_version "can only be set on the initial StreamingPullRequest. If it is set on a subsequent
    # request, the stream will be aborted with status INVALID_ARGUMENT".
    "subscription again": {"subscription": "SUB"},
    "max_outstanding_messages=5": {"max_outstanding_messages": 5},
    "max_outstanding_bytes=1000": {"max_outstanding_bytes": 1000},
    "protocol_version=1": {"protocol_version": 1},
}


@pytest.mark.parametrize("case", list(LATER_REQUESTS))
def test_a_bad_later_streaming_pull_request_ends_the_stream(request: pytest.FixtureRequest, target: Target,
                                                            case: str) -> None:
    """After a good first request (and a delivered message, whose ack id the bad request names), the
    stream ends with INVALID_ARGUMENT."""
    if case in ("modify_deadline_seconds=601", "max_outstanding_messages=5", "max_outstanding_bytes=1000",
                "protocol_version=1"):
        xfail_official(request, target, f"the official emulator accepts {case} on an open stream")
    if case == "protocol_version=1" and "protocol_version" not in StreamingPullRequest.meta.fields:
        pytest.skip("this google-cloud-pubsub's StreamingPullRequest has no protocol_version")
    topic = target.topic()
    sub = target.subscription(topic)
    publish(target, topic, 1)
    stream = RawStream(target, sub)
    try:
        assert wait_for(lambda: len(stream.received) == 1, 20)
        fields = dict(LATER_REQUESTS[case])
        for key in ("modify_deadline_ack_ids",):
            if key in fields:
                fields[key] = [stream.ack_ids()[0] if a == "ACK" else a for a in fields[key]]
        if fields.get("subscription") == "SUB":
            fields["subscription"] = sub
        stream.send(**fields)
        assert stream.done.wait(5), "the stream goes on"  # ours ends it in milliseconds
        assert stream.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        stream.cancel()


def test_client_id_on_a_later_request_is_accepted(target: Target) -> None:
    """client_id "only needs to be provided on the initial request" (the proto): sent again later it
    changes nothing, and the stream goes on delivering."""
    topic = target.topic()
    sub = target.subscription(topic)
    stream = RawStream(target, sub, client_id="first")
    try:
        publish(target, topic, 1, "before")
        assert wait_for(lambda: len(stream.received) == 1, 20)
        stream.send(client_id="first")
        stream.send(client_id="another")
        publish(target, topic, 1, "after")
        assert wait_for(lambda: len(stream.received) == 2, 20), stream.error
        assert not stream.done.is_set()
    finally:
        stream.cancel()


def test_an_undecodable_ack_id_is_refused(target: Target) -> None:
    topic = target.topic()
    sub = target.subscription(topic)
    with pytest.raises(exceptions.InvalidArgument):
        target.subscriber.acknowledge(subscription=sub, ack_ids=["not an ack id"])


@pytest.mark.parametrize("field", ["max_outstanding_messages", "max_outstanding_bytes"])
def test_negative_flow_control_means_no_limit(request: pytest.FixtureRequest, target: Target, field: str) -> None:
    topic = target.topic()
    sub = target.subscription(topic)
    publish(target, topic, 3)
    stream = RawStream(target, sub, **{field: -1})
    try:
        assert wait_for(lambda: len({data for _, data in stream.received}) == 3, 20), stream.received
    finally:
        stream.cancel()
