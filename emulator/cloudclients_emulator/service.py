"""The google.pubsub.v1 Publisher and Subscriber services, on :class:`~.state.State`.

Each RPC is a plain function ``(request) -> response`` over raw protobuf
messages, used by both the gRPC server (:func:`grpc_handlers`) and the REST
gateway (``rest.py``), so both speak exactly the same semantics. Fault
injection (``faults.py``) wraps every call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import empty_pb2

from ._types import pubsub
from .errors import ApiError
from .faults import Faults
from .names import check_project
from .state import State, Stream

__all__ = ["METHODS", "Service", "grpc_handlers"]

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

#: How long a unary Pull waits for messages when none are available (the
#: service returns early; clients call again).
PULL_WAIT = 0.5


def _listing(response_type: Any, field: str, items: list[Any], request: Any) -> Any:
    """One page of *items* (page tokens are offsets) in a List* response."""
    token = request.page_token
    if token and not token.isdigit():
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid page_token: {token!r}")
    start = int(token or 0)
    end = start + (request.page_size if request.page_size > 0 else 1000)
    next_token = str(end) if end < len(items) else ""
    return response_type.pb()(**{field: items[start:end], "next_page_token": next_token})


class Service:
    """Unary implementations and StreamingPull over one :class:`State`."""

    def __init__(self, state: State, faults: Faults) -> None:
        self.state = state
        self.faults = faults

    def call(self, method: str, request: Any) -> Any:
        """Run unary *method* on a raw protobuf *request* (after fault injection)."""
        self.faults.check(method)
        response = getattr(self, f"_{method}")(request)
        return empty_pb2.Empty() if response is None else response

    # -- publisher -------------------------------------------------------------------------

    def _CreateTopic(self, r: Any) -> Any:  # noqa: N802 - named after the RPC
        return self.state.create_topic(r)

    def _UpdateTopic(self, r: Any) -> Any:  # noqa: N802
        return self.state.update_topic(r.topic, r.update_mask.paths)

    def _Publish(self, r: Any) -> Any:  # noqa: N802
        ids = self.state.publish(r.topic, r.messages)
        return pubsub.PublishResponse.pb()(message_ids=ids)

    def _GetTopic(self, r: Any) -> Any:  # noqa: N802
        return self.state.get_topic(r.topic)

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
        return self.state.get_subscription(r.subscription)

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
        received = self.state.pull(r.subscription, r.max_messages, PULL_WAIT)
        return pubsub.PullResponse.pb()(received_messages=received)

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
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "Seek needs a time or a snapshot")
        return pubsub.SeekResponse.pb()()

    # -- streaming pull ----------------------------------------------------------------------

    def streaming_pull(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        """StreamingPull: deliver under the stream's flow control until the client goes away.

        The client's cancel arrives as an RST_STREAM, not a half-close: the
        termination callback closes the stream at once, and its unacked
        messages become available to the next subscriber immediately. The
        server ends streams only with UNAVAILABLE (never OK, which would stop
        the client's subscriber for good).
        """
        try:
            self.faults.check("StreamingPull")
            first = next(requests)
        except StopIteration:
            return
        except ApiError as exc:
            context.abort(exc.code, exc.message)
        try:
            stream = self.state.open_stream(first)
        except ApiError as exc:
            context.abort(exc.code, exc.message)
        context.add_callback(lambda: self.state.close_stream(stream))
        self._handle_request(stream, first)
        threading.Thread(target=self._read, args=(stream, requests), daemon=True,
                         name=f"stream-{stream.id}-reader").start()
        response_type = pubsub.StreamingPullResponse.pb()
        try:
            while context.is_active():
                received = self.state.stream_take(stream, wait=1.0)
                if stream.broken is not None:
                    context.abort(stream.broken, "The server closed the stream; reconnect")
                if stream.closed:
                    break
                if received:
                    yield response_type(received_messages=received)
        finally:
            self.state.close_stream(stream)

    def _read(self, stream: Stream, requests: Iterator[Any]) -> None:
        try:
            for request in requests:
                if stream.closed:
                    break
                self._handle_request(stream, request)
        except Exception:  # the stream was cancelled or broke: nothing more will come
            pass

    def _handle_request(self, stream: Stream, request: Any) -> None:
        # Acks, nacks and lease extensions may also come on the stream; an
        # empty request is the client's heartbeat.
        name = stream.sub.name
        try:
            if request.ack_ids:
                self.state.acknowledge(name, request.ack_ids)
            if request.modify_deadline_ack_ids:
                by_deadline: dict[int, list[str]] = {}
                for ack_id, seconds in zip(request.modify_deadline_ack_ids, request.modify_deadline_seconds,
                                           strict=False):
                    by_deadline.setdefault(seconds, []).append(ack_id)
                for seconds, ack_ids in by_deadline.items():
                    self.state.modify_ack_deadline(name, ack_ids, seconds)
            if request.stream_ack_deadline_seconds:
                stream.ack_deadline = float(request.stream_ack_deadline_seconds)
        except ApiError as exc:
            log.debug("stream %d: ignoring request: %s", stream.id, exc.message)


def grpc_handlers(service: Service) -> list[grpc.GenericRpcHandler]:
    """Generic handlers for both services, (de)serialising raw protobuf messages."""
    tables: dict[str, dict[str, grpc.RpcMethodHandler]] = {PUBLISHER: {}, SUBSCRIBER: {}}
    for method, (svc, request_type, response_type) in METHODS.items():
        resp_cls = response_type.pb() if response_type is not None else empty_pb2.Empty
        tables[svc][method] = grpc.unary_unary_rpc_method_handler(
            _unary(service, method),
            request_deserializer=request_type.pb().FromString,
            response_serializer=resp_cls.SerializeToString,
        )
    tables[SUBSCRIBER]["StreamingPull"] = grpc.stream_stream_rpc_method_handler(
        service.streaming_pull,
        request_deserializer=pubsub.StreamingPullRequest.pb().FromString,
        response_serializer=pubsub.StreamingPullResponse.pb().SerializeToString,
    )
    return [grpc.method_handlers_generic_handler(name, table) for name, table in tables.items()]


def _unary(service: Service, method: str) -> Callable[[Any, grpc.ServicerContext], Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return service.call(method, request)
        except ApiError as exc:
            context.abort(exc.code, exc.message)

    return handler

