"""The service's limits on what a Publish may carry: a request it refuses is refused here too."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions
from google.pubsub_v1 import PublisherClient as GapicPublisher

from tests.conformance_core.conftest import Target, xfail_official


def refused(target: Target, topic: str, messages: list[dict[str, Any]]) -> exceptions.GoogleAPICallError:
    """The error of one Publish RPC carrying exactly *messages* (no client batching, no retry)."""
    with pytest.raises(exceptions.GoogleAPICallError) as info:
        GapicPublisher.publish(target.publisher, request={"topic": topic, "messages": messages}, retry=None,
                               timeout=30)
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
