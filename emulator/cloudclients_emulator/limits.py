"""The service's size limits, and the emulator's own bounds on what it sends and receives.

The service's limits (https://cloud.google.com/pubsub/quotas#resource_limits)
are enforced so that what a test publishes here is what production accepts:
a request the service refuses is refused here too, with its wording.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import ApiError, Code

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTE_KEY_BYTES",
    "MAX_ATTRIBUTE_VALUE_BYTES",
    "MAX_GRPC_RECEIVE_BYTES",
    "MAX_HTTP_BODY_BYTES",
    "MAX_ORDERING_KEY_BYTES",
    "MAX_PUBLISH_BYTES",
    "MAX_PUBLISH_MESSAGES",
    "MAX_PULL_MESSAGES",
    "MAX_RESPONSE_BYTES",
    "MAX_RETENTION_S",
    "MIN_RETENTION_S",
    "check_publish",
    "check_retention",
    "check_retry_policy",
]

#: A PublishRequest, serialised (the service: "Request payload size exceeds the limit: 10485760 bytes.").
MAX_PUBLISH_BYTES = 10 * 1024 * 1024
MAX_PUBLISH_MESSAGES = 1000
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024
MAX_ORDERING_KEY_BYTES = 1024

#: Messages per Pull or StreamingPull response (the service sends at most 1000).
MAX_PULL_MESSAGES = 1000
#: Bytes per Pull or StreamingPull response. Clients keep gRPC's default 4 MiB
#: receive limit against an emulator, so responses stay well under it; a single
#: larger message (up to the 10 MB limit) is sent alone.
MAX_RESPONSE_BYTES = 1024 * 1024

#: gRPC messages larger than this are refused with RESOURCE_EXHAUSTED before
#: they are read (above MAX_PUBLISH_BYTES, so an oversized Publish gets the
#: service's INVALID_ARGUMENT rather than a transport error).
MAX_GRPC_RECEIVE_BYTES = 20 * 1024 * 1024
#: HTTP/1.1 request bodies (REST JSON carries data base64-encoded: 4/3 of it).
MAX_HTTP_BODY_BYTES = 32 * 1024 * 1024

#: message_retention_duration of a topic or subscription: "Cannot be more than 31 days or less than 10 minutes."
MIN_RETENTION_S, MAX_RETENTION_S = 10 * 60, 31 * 24 * 3600
#: RetryPolicy minimum_backoff and maximum_backoff: "The value should be between 0 and 600 seconds."
MAX_BACKOFF_S = 600


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def check_publish(messages: Sequence[Any], request_bytes: int) -> None:
    """Refuse a Publish the service would refuse.

    :param messages: the request's ``PubsubMessage`` protobufs.
    :param request_bytes: the serialised size of the whole PublishRequest.
    :raises ApiError: INVALID_ARGUMENT naming the limit and the offending value.
    """
    if not messages:
        raise ApiError(Code.INVALID_ARGUMENT, "The request contains no messages")
    if len(messages) > MAX_PUBLISH_MESSAGES:
        raise ApiError(Code.INVALID_ARGUMENT,
                       f"The value for message_count is too large. You passed {len(messages)} in the request, "
                       f"but the maximum value is {MAX_PUBLISH_MESSAGES}.")
    if request_bytes > MAX_PUBLISH_BYTES:
        raise ApiError(Code.INVALID_ARGUMENT, f"Request payload size exceeds the limit: {MAX_PUBLISH_BYTES} bytes.")
    for message in messages:
        attributes = message.attributes
        if not message.data and not attributes:
            raise ApiError(Code.INVALID_ARGUMENT,
                           "Some messages are empty: a message needs data or at least one attribute")
        if message.ordering_key and _utf8_len(message.ordering_key) > MAX_ORDERING_KEY_BYTES:
            raise ApiError(Code.INVALID_ARGUMENT,
                           f"An ordering key in the request is too long: {_utf8_len(message.ordering_key)} bytes, "
                           f"but the maximum allowed is {MAX_ORDERING_KEY_BYTES}.")
        if not attributes:
            continue
        if len(attributes) > MAX_ATTRIBUTES:
            raise ApiError(Code.INVALID_ARGUMENT,
                           f"A message in the request has {len(attributes)} attributes, "
                           f"but the maximum allowed is {MAX_ATTRIBUTES}.")
        for key, value in attributes.items():
            if _utf8_len(key) > MAX_ATTRIBUTE_KEY_BYTES:
                raise ApiError(Code.INVALID_ARGUMENT,
                               f"One of the attributes in the request has a key that is too long. The length is "
                               f"{_utf8_len(key)} bytes, but the maximum allowed is {MAX_ATTRIBUTE_KEY_BYTES}.")
            if _utf8_len(value) > MAX_ATTRIBUTE_VALUE_BYTES:
                raise ApiError(Code.INVALID_ARGUMENT,
                               f"One of the attributes in the request has a value that is too long. The length is "
                               f"{_utf8_len(value)} bytes, but the maximum allowed is {MAX_ATTRIBUTE_VALUE_BYTES}.")


def _seconds(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


def _range(field: str, value: float, low: float, high: float) -> None:
    if value < low:
        raise ApiError(Code.INVALID_ARGUMENT, f"The value for {field} is too small. You passed {value:g}s in the "
                                              f"request, but the minimum value is {low:g}s.")
    if value > high:
        raise ApiError(Code.INVALID_ARGUMENT, f"The value for {field} is too large. You passed {value:g}s in the "
                                              f"request, but the maximum value is {high:g}s.")


def check_retention(resource: Any) -> None:
    """Refuse a topic's or subscription's ``message_retention_duration`` outside 10 minutes .. 31 days (if set)."""
    if resource.HasField("message_retention_duration"):
        _range("message_retention_duration", _seconds(resource.message_retention_duration),
               MIN_RETENTION_S, MAX_RETENTION_S)


def check_retry_policy(subscription: Any) -> None:
    """Refuse backoffs outside 0 .. 600 s, or a minimum above the maximum (unset: the defaults, 10 s and 600 s)."""
    if not subscription.HasField("retry_policy"):
        return
    policy = subscription.retry_policy
    low = _seconds(policy.minimum_backoff) if policy.HasField("minimum_backoff") else 10.0
    high = _seconds(policy.maximum_backoff) if policy.HasField("maximum_backoff") else float(MAX_BACKOFF_S)
    _range("retry_policy.minimum_backoff", low, 0, MAX_BACKOFF_S)
    _range("retry_policy.maximum_backoff", high, 0, MAX_BACKOFF_S)
    if low > high:
        raise ApiError(Code.INVALID_ARGUMENT, f"The retry_policy.minimum_backoff ({low:g}s) must not be larger than "
                                              f"the retry_policy.maximum_backoff ({high:g}s).")
