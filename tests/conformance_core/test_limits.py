"""The service's limits on what a Publish may carry: a request it refuses is refused here too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions
from google.pubsub_v1 import PublisherClient as GapicPublisher

from tests.conformance_core.conftest import Target, xfail_official


def refused(target: Target, topic: str, messages: list[dict[str, Any]]) -> exceptions.GoogleAPICallError:
    """The error of one Publish RPC carrying exactly *messages* (no client batching, no retry; an emulator
    that never answers fails with DeadlineExceeded after 10 s)."""
    with pytest.raises(exceptions.GoogleAPICallError) as info:
        GapicPublisher.publish(target.publisher, request={"topic": topic, "messages": messages}, retry=None,
                               timeout=10)
    return info.value


def test_more_than_1000_messages_in_one_publish(target: Target) -> None:
    topic = target.topic()
    error = refused(target, topic, [{"data": b"x"} for _ in range(1001)])
    assert isinstance(error, exceptions.InvalidArgument), error
    assert len(target.publish_batch(topic, [{"data": b"x"} for _ in range(1000)]).message_ids) == 1000


def test_a_publish_request_over_10_mib(request: pytest.FixtureRequest, target: Target) -> None:
    xfail_official(request, target, "the official emulator's gRPC server takes at most 4 MiB per message "
                   "(RESOURCE_EXHAUSTED), where the service answers INVALID_ARGUMENT")
    topic = target.topic()
    error = refused(target, topic, [{"data": b"x" * (6 * 1024 * 1024)} for _ in range(2)])
    assert isinstance(error, exceptions.InvalidArgument), error
    assert "10485760" in str(error)


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("101 attributes", {"data": b"x", "attributes": {f"k{i}": "v" for i in range(101)}}),
        ("a 257-byte attribute key", {"data": b"x", "attributes": {"k" * 257: "v"}}),
        ("a 1025-byte attribute value", {"data": b"x", "attributes": {"k": "v" * 1025}}),
        ("a 1025-byte ordering key", {"data": b"x", "ordering_key": "o" * 1025}),
    ],
)
def test_message_limits(request: pytest.FixtureRequest, target: Target, what: str, message: dict[str, Any]) -> None:
    """The limits on attributes and ordering keys (https://cloud.google.com/pubsub/quotas#resource_limits)."""
    xfail_official(request, target, f"the official emulator accepts {what}")
    topic = target.topic()
    error = refused(target, topic, [message])
    assert isinstance(error, exceptions.InvalidArgument), error


# -- acknowledgements ----------------------------------------------------------------------------


@pytest.mark.parametrize("ack_ids", [[], ["garbage"], ["not-an-ack-id"]], ids=["none", "garbage", "dashes"])
@pytest.mark.parametrize("rpc", ["acknowledge", "modify_ack_deadline"])
def test_ack_ids_must_be_given_and_well_formed(target: Target, rpc: str, ack_ids: list[str]) -> None:
    """Acknowledge / ModifyAckDeadline without ack ids ("You have not specified an ack ID in the request.")
    or with one the service never handed out: INVALID_ARGUMENT."""
    subscription = target.subscription(target.topic())
    extra = {"ack_deadline_seconds": 30} if rpc == "modify_ack_deadline" else {}
    with pytest.raises(exceptions.InvalidArgument):
        getattr(target.subscriber, rpc)(request={"subscription": subscription, "ack_ids": ack_ids, **extra},
                                        retry=None, timeout=10)


def test_an_expired_or_repeated_ack_id_is_not_an_error(target: Target) -> None:
    """A well-formed ack id the subscription no longer knows is ignored, as by the service."""
    topic = target.topic()
    subscription = target.subscription(topic)
    target.publish_batch(topic, [{"data": b"x"}])
    received = target.subscriber.pull(subscription=subscription, max_messages=1, timeout=10).received_messages
    ack_id = received[0].ack_id
    for _ in range(2):
        target.subscriber.acknowledge(subscription=subscription, ack_ids=[ack_id])
    target.subscriber.modify_ack_deadline(subscription=subscription, ack_ids=[ack_id], ack_deadline_seconds=30)


# -- durations ---------------------------------------------------------------------------------------

DAY = 24 * 3600


@pytest.mark.parametrize("seconds", [599, 31 * DAY + 1], ids=["under 10 minutes", "over 31 days"])
def test_message_retention_out_of_range(request: pytest.FixtureRequest, target: Target, seconds: int) -> None:
    """message_retention_duration "cannot be more than 31 days or less than 10 minutes", for topics and
    subscriptions; the bounds themselves are accepted; a refused update leaves the subscription as it was."""
    xfail_official(request, target, "the official emulator accepts any message_retention_duration")
    topic = target.topic()
    retention = {"seconds": seconds}
    with pytest.raises(exceptions.InvalidArgument):
        target.publisher.create_topic(request={"name": target.name("topics"), "message_retention_duration": retention})
    with pytest.raises(exceptions.InvalidArgument):
        target.subscription(topic, message_retention_duration=retention)
    for bound in (600, 31 * DAY):
        target.publisher.create_topic(request={"name": target.name("topics"),
                                               "message_retention_duration": {"seconds": bound}})
        target.subscription(topic, message_retention_duration={"seconds": bound})
    subscription = target.subscription(topic, message_retention_duration={"seconds": 3600})
    with pytest.raises(exceptions.InvalidArgument):
        target.subscriber.update_subscription(request={
            "subscription": {"name": subscription, "message_retention_duration": retention},
            "update_mask": {"paths": ["message_retention_duration"]}})
    with pytest.raises(exceptions.InvalidArgument):
        target.publisher.update_topic(request={
            "topic": {"name": topic, "message_retention_duration": retention},
            "update_mask": {"paths": ["message_retention_duration"]}})
    got = target.subscriber.get_subscription(subscription=subscription)
    assert got.message_retention_duration.total_seconds() == 3600


@pytest.mark.parametrize(
    "policy",
    [
        {"minimum_backoff": {"seconds": -1}},
        {"minimum_backoff": {"seconds": 601}, "maximum_backoff": {"seconds": 600}},
        {"maximum_backoff": {"seconds": 601}},
        {"minimum_backoff": {"seconds": 20}, "maximum_backoff": {"seconds": 10}},
    ],
    ids=["negative minimum", "minimum over 600 s", "maximum over 600 s", "minimum above maximum"],
)
def test_retry_policy_out_of_range(target: Target, policy: dict[str, Any]) -> None:
    """RetryPolicy backoffs "should be between 0 and 600 seconds", the minimum not above the maximum."""
    with pytest.raises(exceptions.InvalidArgument):
        target.subscription(target.topic(), retry_policy=policy)


# -- names, filters, REST ------------------------------------------------------------------------------


@pytest.mark.parametrize("collection", ["topics", "subscriptions", "snapshots"])
def test_an_id_ending_in_a_newline_is_refused(target: Target, collection: str) -> None:
    """"my-topic\\n" is not a valid id (a "$"-anchored pattern would let it through)."""
    topic = target.topic()
    name = target.name(collection) + "\n"
    create: dict[str, Callable[[], Any]] = {
        "topics": lambda: target.publisher.create_topic(name=name),
        "subscriptions": lambda: target.subscriber.create_subscription(name=name, topic=topic),
        "snapshots": lambda: target.subscriber.create_snapshot(name=name, subscription=target.subscription(topic)),
    }
    with pytest.raises(exceptions.InvalidArgument):
        create[collection]()


def test_the_filter_limit_is_in_bytes(request: pytest.FixtureRequest, target: Target) -> None:
    """A filter may be 256 bytes: 200 characters of "é" (400 bytes) are refused, 256 ASCII bytes accepted."""
    xfail_official(request, target, "the official emulator counts the filter's characters, not its bytes")
    topic = target.topic()
    prefix = 'attributes.k = "'
    with pytest.raises(exceptions.InvalidArgument):
        target.subscription(topic, filter=prefix + "é" * 200 + '"')
    target.subscription(topic, filter=prefix + "x" * (256 - len(prefix) - 1) + '"')



@pytest.mark.parametrize(
    ("method", "what", "body"),
    [
        ("PUT", "topics", b'{"labelz": {"a": "b"}}'),
        ("POST", "topics:publish", b'{"messages": [{"dta": "eA=="}]}'),
    ],
    ids=["a misspelt topic field", "a misspelt message field"],
)
def test_rest_refuses_unknown_json_fields(request: pytest.FixtureRequest, target: Target, method: str, what: str,
                                         body: bytes) -> None:
    """An unknown field in a REST body is a 400 INVALID_ARGUMENT ("Invalid JSON payload received. Unknown
    name ..."), not silently dropped."""
    xfail_official(request, target, "the official emulator refuses it with 400 INVALID_ARGUMENT, but words it "
                   "\"Payload isn't valid for request.\" where the service names the unknown field")
    topic = target.topic()
    path = target.name("topics") if what == "topics" else f"{topic}:publish"
    status, error = target.rest(method, path, body)
    assert status == 400, (status, error)
    assert error["error"]["status"] == "INVALID_ARGUMENT"
    assert "Unknown name" in error["error"]["message"]
