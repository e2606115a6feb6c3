"""The google.pubsub.v1 Publisher and Subscriber services, on :class:`~.state.State`.

Each unary RPC is a plain function ``(request) -> response`` over raw protobuf
messages (a response may also be serialised bytes, or a future for either),
used by both the gRPC server (:meth:`Service.grpc_methods`) and the REST
gateway (``rest.py``), so both speak exactly the same semantics. Fault
injection (``faults.py``) applies to every call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from google.protobuf import empty_pb2

from ._types import pubsub
from .errors import ApiError, Code
from .faults import Faults
from .grpc_h2 import Method, ServerCall
from .iam import IAM_METHODS, IamPolicies
from .names import check_project
from .pulling import StreamingPull, pull
from .state import State

__all__ = ["METHODS", "UNARY", "Service"]

log = logging.getLogger("cloudclients_emulator")

PUBLISHER = "google.pubsub.v1.Publisher"
SUBSCRIBER = "google.pubsub.v1.Subscriber"

#: Unary methods: name -> (service, request type, response type).
METHODS: dict[str, tuple[str, Any, Any]] = {
    "CreateTopic": (PUBLISHER, pubsub.Topic, pubsub.Topic),
    "UpdateTopic": (PUBLISHER, pubsub.UpdateTopicRequest, pubsub.Topic),
    "Publish": (PUBLISHER, pubsub.PublishRequest, pubsub.PublishResponse),
    "GetTopic": (PUBLISHER, pubsub.GetTopicRequest, pubsub.Topic),
    "ListTopics": (PUBLISHER, pubsub.ListTopicsRequest, pubsub.ListTopicsResponse),
    "ListTopicSubscriptions": (PUBLISHER, pubsub.ListTopicSubscriptionsRequest, pubsub.ListTopicSubscriptionsResponse),
    "ListTopicSnapshots": (PUBLISHER, pubsub.ListTopicSnapshotsRequest, pubsub.ListTopicSnapshotsResponse),
    "DeleteTopic": (PUBLISHER, pubsub.DeleteTopicRequest, None),
    "DetachSubscription": (PUBLISHER, pubsub.DetachSubscriptionRequest, pubsub.DetachSubscriptionResponse),
    "CreateSubscription": (SUBSCRIBER, pubsub.Subscription, pubsub.Subscription),
    "GetSubscription": (SUBSCRIBER, pubsub.GetSubscriptionRequest, pubsub.Subscription),
    "UpdateSubscription": (SUBSCRIBER, pubsub.UpdateSubscriptionRequest, pubsub.Subscription),
    "ListSubscriptions": (SUBSCRIBER, pubsub.ListSubscriptionsRequest, pubsub.ListSubscriptionsResponse),
    "DeleteSubscription": (SUBSCRIBER, pubsub.DeleteSubscriptionRequest, None),
    "ModifyAckDeadline": (SUBSCRIBER, pubsub.ModifyAckDeadlineRequest, None),
    "Acknowledge": (SUBSCRIBER, pubsub.AcknowledgeRequest, None),
    "Pull": (SUBSCRIBER, pubsub.PullRequest, pubsub.PullResponse),
    "ModifyPushConfig": (SUBSCRIBER, pubsub.ModifyPushConfigRequest, None),
    "GetSnapshot": (SUBSCRIBER, pubsub.GetSnapshotRequest, pubsub.Snapshot),
    "ListSnapshots": (SUBSCRIBER, pubsub.ListSnapshotsRequest, pubsub.ListSnapshotsResponse),
    "CreateSnapshot": (SUBSCRIBER, pubsub.CreateSnapshotRequest, pubsub.Snapshot),
    "UpdateSnapshot": (SUBSCRIBER, pubsub.UpdateSnapshotRequest, pubsub.Snapshot),
    "DeleteSnapshot": (SUBSCRIBER, pubsub.DeleteSnapshotRequest, None),
    "Seek": (SUBSCRIBER, pubsub.SeekRequest, pubsub.SeekResponse),
}
#: Every unary method, Pub/Sub's and IAMPolicy's: name -> (service, raw request class, raw response class).
UNARY: dict[str, tuple[str, Any, Any]] = {
    **{name: (service, request.pb(), None if response is None else response.pb())
       for name, (service, request, response) in METHODS.items()},
    **IAM_METHODS,
}
STREAMING_METHODS = ("StreamingPull",)
ALL_METHODS = (*UNARY, *STREAMING_METHODS)

_EMPTY = empty_pb2.Empty()
_PublishResponse: Any = pubsub.PublishResponse.pb()


def _listing(response_type: Any, field: str, items: list[Any], request: Any) -> Any:
    """One page of *items* (page tokens are offsets) in a List* response."""
    token = request.page_token
    if token and not token.isdigit():
        raise ApiError(Code.INVALID_ARGUMENT, f"Invalid page_token: {token!r}")
    start = int(token or 0)
    end = start + (request.page_size if request.page_size > 0 else 1000)
    next_token = str(end) if end < len(items) else ""
    return response_type.pb()(**{field: items[start:end], "next_page_token": next_token})


class Service:
    """Unary implementations and StreamingPull over one :class:`State`."""

    def __init__(self, state: State, faults: Faults) -> None:
        self.state = state
        self.faults = faults
        self.loop = state.loop
        self.iam = IamPolicies(state)
        self._impl: dict[str, Callable[[Any], Any]] = {m: getattr(self, f"_{m}") for m in METHODS}
        self._impl.update(GetIamPolicy=self.iam.get, SetIamPolicy=self.iam.set, TestIamPermissions=self.iam.test)

    def call(self, method: str, request: Any) -> Any:
        """Run unary *method* on a raw protobuf *request* (after fault injection).

        :returns: the response (a protobuf, or serialised bytes), or a future for it.
        :raises ApiError: the call is refused.
        """
        impl = self._impl[method]
        fault = self.faults.take(method) if self.faults.armed else None
        if fault is None:
            response = impl(request)
            return _EMPTY if response is None else response
        if not fault.delay_ms:
            if fault.status is not Code.OK:
                raise ApiError(fault.status, f"Injected fault for {method}")
            response = impl(request)
            return _EMPTY if response is None else response
        future: asyncio.Future[Any] = self.loop.create_future()

        def fire() -> None:
            if future.done():  # the client went away meanwhile
                return
            try:
                if fault.status is not Code.OK:
                    raise ApiError(fault.status, f"Injected fault for {method}")
                result = impl(request)
            except ApiError as exc:
                future.set_exception(exc)
                return
            if isinstance(result, asyncio.Future):
                _chain(result, future)
            else:
                future.set_result(_EMPTY if result is None else result)

        handle = self.loop.call_later(fault.delay_ms / 1000, fire)
        future.add_done_callback(lambda _: handle.cancel())
        return future

    def grpc_methods(self) -> dict[bytes, Method]:
        """The gRPC method table, by ``:path``."""
        table: dict[bytes, Method] = {}
        for name, (service, request_class, _) in UNARY.items():
            table[f"/{service}/{name}".encode()] = Method(request_class, unary=partial(self.call, name))
        table[f"/{SUBSCRIBER}/StreamingPull".encode()] = Method(
            pubsub.StreamingPullRequest.pb(), stream=self.streaming_pull)
        return table

    def streaming_pull(self, call: ServerCall) -> StreamingPull:
        return StreamingPull(self.state, self.faults, call)

    # -- publisher -------------------------------------------------------------------------

    def _CreateTopic(self, r: Any) -> Any:  # noqa: N802 - named after the RPC
        return self.state.create_topic(r)

    def _UpdateTopic(self, r: Any) -> Any:  # noqa: N802
        return self.state.update_topic(r.topic, r.update_mask.paths)

    def _Publish(self, r: Any) -> Any:  # noqa: N802
        return _PublishResponse(message_ids=self.state.publish(r))

    def _GetTopic(self, r: Any) -> Any:  # noqa: N802
        return self.state.topic(r.topic).pb

    def _ListTopics(self, r: Any) -> Any:  # noqa: N802
        check_project(r.project)
        return _listing(pubsub.ListTopicsResponse, "topics", self.state.list_topics(r.project), r)

    def _ListTopicSubscriptions(self, r: Any) -> Any:  # noqa: N802
        subscriptions = self.state.topic_subscriptions(r.topic)
        return _listing(pubsub.ListTopicSubscriptionsResponse, "subscriptions", subscriptions, r)

    def _ListTopicSnapshots(self, r: Any) -> Any:  # noqa: N802
        return _listing(pubsub.ListTopicSnapshotsResponse, "snapshots", self.state.topic_snapshots(r.topic), r)

    def _DeleteTopic(self, r: Any) -> None:  # noqa: N802
        self.state.delete_topic(r.topic)

    def _DetachSubscription(self, r: Any) -> Any:  # noqa: N802
        self.state.detach_subscription(r.subscription)
        return pubsub.DetachSubscriptionResponse.pb()()

    # -- subscriber -------------------------------------------------------------------------

    def _CreateSubscription(self, r: Any) -> Any:  # noqa: N802
        return self.state.create_subscription(r)

    def _GetSubscription(self, r: Any) -> Any:  # noqa: N802
        return self.state.sub(r.subscription).pb

    def _UpdateSubscription(self, r: Any) -> Any:  # noqa: N802
        return self.state.update_subscription(r.subscription, r.update_mask.paths)

    def _ListSubscriptions(self, r: Any) -> Any:  # noqa: N802
        check_project(r.project)
        return _listing(pubsub.ListSubscriptionsResponse, "subscriptions", self.state.list_subscriptions(r.project), r)

    def _DeleteSubscription(self, r: Any) -> None:  # noqa: N802
        self.state.delete_subscription(r.subscription)

    def _ModifyAckDeadline(self, r: Any) -> None:  # noqa: N802
        self.state.modify_ack_deadline(r.subscription, r.ack_ids, r.ack_deadline_seconds)

    def _Acknowledge(self, r: Any) -> None:  # noqa: N802
        self.state.acknowledge(r.subscription, r.ack_ids)

    def _Pull(self, r: Any) -> Any:  # noqa: N802
        return pull(self.state, r, self.loop)

    def _ModifyPushConfig(self, r: Any) -> None:  # noqa: N802
        self.state.modify_push_config(r.subscription, r.push_config)

    def _GetSnapshot(self, r: Any) -> Any:  # noqa: N802
        return self.state.get_snapshot(r.snapshot)

    def _ListSnapshots(self, r: Any) -> Any:  # noqa: N802
        check_project(r.project)
        return _listing(pubsub.ListSnapshotsResponse, "snapshots", self.state.list_snapshots(r.project), r)

    def _CreateSnapshot(self, r: Any) -> Any:  # noqa: N802
        return self.state.create_snapshot(r.name, r.subscription, dict(r.labels))

    def _UpdateSnapshot(self, r: Any) -> Any:  # noqa: N802
        return self.state.update_snapshot(r.snapshot, r.update_mask.paths)

    def _DeleteSnapshot(self, r: Any) -> None:  # noqa: N802
        self.state.delete_snapshot(r.snapshot)

    def _Seek(self, r: Any) -> Any:  # noqa: N802
        which = r.WhichOneof("target")
        if which == "time":
            self.state.seek(r.subscription, time_ns=r.time.ToNanoseconds())
        elif which == "snapshot":
            self.state.seek(r.subscription, snapshot=r.snapshot)
        else:
            raise ApiError(Code.INVALID_ARGUMENT, "Seek needs a time or a snapshot")
        return pubsub.SeekResponse.pb()()


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """Complete *target* as *source* completes (and cancel *source* with *target*)."""

    def done(_: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if source.cancelled():
            target.cancel()
        elif source.exception() is not None:
            target.set_exception(source.exception())  # type: ignore[arg-type]
        else:
            target.set_result(source.result())

    source.add_done_callback(done)
    target.add_done_callback(lambda _: source.cancel() if target.cancelled() else None)
