"""Helpers for the conformance suite: clients on a target, resource names, pulls, waits.

Everything talks to the emulator the way an application does: the real
google-cloud-pubsub clients over a real gRPC socket (explicit insecure
channels, so no environment variable is involved).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.pubsub_v1 import PublisherClient as PublisherApi
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
from google.pubsub_v1.types import ReceivedMessage

from cloudclients._emulators import EmulatorProcess

__all__ = [
    "EVENTUALLY",
    "Collector",
    "Names",
    "Target",
    "TargetKind",
    "ack",
    "message_ids",
    "nack",
    "publish",
    "pull_for",
    "pull_until",
    "wait_until",
]

TargetKind = Literal["cloudclients", "official"]

#: Upper bound for "this happens promptly" (delivery, redelivery, push). Generous
#: on purpose: the machine is shared; a correct emulator is far faster.
EVENTUALLY = 10.0


def _channel(host: str) -> grpc.Channel:
    return grpc.insecure_channel(host)


def make_publisher(host: str, *, ordering: bool = False) -> pubsub_v1.PublisherClient:
    """A batching ``PublisherClient`` on an insecure channel to *host*."""
    options = pubsub_v1.types.PublisherOptions(enable_message_ordering=ordering)
    return pubsub_v1.PublisherClient(
        publisher_options=options, transport=PublisherGrpcTransport(channel=_channel(host))
    )


def make_subscriber(host: str) -> pubsub_v1.SubscriberClient:
    """A ``SubscriberClient`` on an insecure channel to *host*."""
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=_channel(host)))


def close_publisher(client: pubsub_v1.PublisherClient) -> None:
    """Flush and close a batching publisher (idempotent enough for teardown)."""
    try:
        client.stop()
    except RuntimeError:  # already stopped
        pass
    client.transport.close()


@dataclass
class Target:
    """One emulator under test with long-lived clients pointed at it.

    :ivar publisher: batching ``PublisherClient`` (default batch settings).
    :ivar publisher_api: the plain GAPIC client: one ``Publish`` RPC per call.
    :ivar subscriber: ``SubscriberClient`` for admin calls, Pull and subscribe().
    """

    kind: TargetKind
    emulator: EmulatorProcess
    publisher: pubsub_v1.PublisherClient
    publisher_api: PublisherApi
    subscriber: pubsub_v1.SubscriberClient

    @classmethod
    def connect(cls, kind: TargetKind, emulator: EmulatorProcess) -> Target:
        api = PublisherApi(transport=PublisherGrpcTransport(channel=_channel(emulator.host)))
        return cls(kind, emulator, make_publisher(emulator.host), api, make_subscriber(emulator.host))

    @property
    def host(self) -> str:
        return self.emulator.host

    @property
    def ours(self) -> bool:
        return self.kind == "cloudclients"

    def close(self) -> None:
        close_publisher(self.publisher)
        self.publisher_api.transport.close()
        self.subscriber.close()

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call our emulator's admin HTTP API (same port as gRPC); return the JSON answer."""
        assert self.ours, "the admin API exists on our emulator only"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://{self.host}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw.strip() else None


@dataclass
class Names:
    """Resource names for one test, in a project of its own (so listings only
    show what the test made). Creating helpers use the target's clients."""

    target: Target
    project: str = field(default_factory=lambda: f"cf-{uuid.uuid4().hex[:12]}")
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _path(self, collection: str, label: str) -> str:
        return f"projects/{self.project}/{collection}/{label}-{next(self._counter)}"

    def topic_path(self, label: str = "topic") -> str:
        return self._path("topics", label)

    def subscription_path(self, label: str = "sub") -> str:
        return self._path("subscriptions", label)

    def snapshot_path(self, label: str = "snap") -> str:
        return self._path("snapshots", label)

    def topic(self, label: str = "topic", **fields: Any) -> str:
        """Create a topic; return its name."""
        name = self.topic_path(label)
        self.target.publisher.create_topic(request={"name": name, **fields}, timeout=10)
        return name

    def subscription(self, topic: str, label: str = "sub", **fields: Any) -> str:
        """Create a subscription on *topic*; return its name."""
        name = self.subscription_path(label)
        self.target.subscriber.create_subscription(request={"name": name, "topic": topic, **fields}, timeout=10)
        return name

    def topic_and_subscription(self, **fields: Any) -> tuple[str, str]:
        topic = self.topic()
        return topic, self.subscription(topic, **fields)


# -- publishing -----------------------------------------------------------------------


def publish(
    target: Target,
    topic: str,
    payloads: Iterable[bytes],
    *,
    publisher: pubsub_v1.PublisherClient | None = None,
    ordering_key: str = "",
    **attributes: str,
) -> list[str]:
    """Publish *payloads* through a batching publisher; wait for every message id."""
    client = publisher or target.publisher
    futures = [client.publish(topic, data, ordering_key=ordering_key, **attributes) for data in payloads]
    return [f.result(timeout=EVENTUALLY) for f in futures]


# -- pulling --------------------------------------------------------------------------


def _pull(subscriber: pubsub_v1.SubscriberClient, subscription: str, timeout: float) -> list[ReceivedMessage]:
    try:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": 1000}, timeout=max(timeout, 0.2), retry=None
        )
    except exceptions.DeadlineExceeded:
        return []
    return list(response.received_messages)


def pull_until(
    target: Target,
    subscription: str,
    count: int,
    *,
    timeout: float = EVENTUALLY,
    ack_them: bool = True,
    subscriber: pubsub_v1.SubscriberClient | None = None,
) -> list[ReceivedMessage]:
    """Pull until *count* messages arrived or *timeout* passed; ack each batch if *ack_them*."""
    client = subscriber or target.subscriber
    received: list[ReceivedMessage] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and (remaining := deadline - time.monotonic()) > 0:
        batch = _pull(client, subscription, min(remaining, 2.0))
        if batch and ack_them:
            ack(target, subscription, batch)
        received.extend(batch)
    return received


def pull_for(target: Target, subscription: str, seconds: float, *, ack_them: bool = True) -> list[ReceivedMessage]:
    """Everything that arrives on *subscription* within *seconds* (to prove nothing does)."""
    received: list[ReceivedMessage] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0.05:
        batch = _pull(target.subscriber, subscription, remaining)
        if batch and ack_them:
            ack(target, subscription, batch)
        received.extend(batch)
    return received


def ack(target: Target, subscription: str, messages: Sequence[ReceivedMessage]) -> None:
    target.subscriber.acknowledge(
        request={"subscription": subscription, "ack_ids": [m.ack_id for m in messages]}, timeout=10
    )


def nack(target: Target, subscription: str, messages: Sequence[ReceivedMessage]) -> None:
    """Negative acknowledgement: ModifyAckDeadline to 0 seconds."""
    modack(target, subscription, messages, 0)


def modack(target: Target, subscription: str, messages: Sequence[ReceivedMessage], seconds: int) -> None:
    target.subscriber.modify_ack_deadline(
        request={"subscription": subscription, "ack_ids": [m.ack_id for m in messages],
                 "ack_deadline_seconds": seconds},
        timeout=10,
    )


def message_ids(messages: Iterable[ReceivedMessage]) -> list[str]:
    return [m.message.message_id for m in messages]


def payloads(messages: Iterable[ReceivedMessage]) -> list[bytes]:
    return [m.message.data for m in messages]


# -- streaming pull -------------------------------------------------------------------


class Collector:
    """A ``subscribe()`` callback that records every message (and acks it if asked)."""

    def __init__(self, *, ack_them: bool = True) -> None:
        self.ack_them = ack_them
        self.messages: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, message: Any) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()
        if self.ack_them:
            message.ack()

    def wait_for(self, count: int, timeout: float = EVENTUALLY) -> bool:
        """Wait until at least *count* messages arrived; return whether they did."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.messages) >= count, timeout)

    def wait_for_ids(self, ids: Iterable[str], timeout: float = EVENTUALLY) -> set[str]:
        """Wait until every id in *ids* arrived; return the ids still missing."""
        wanted = set(ids)
        with self._cond:
            self._cond.wait_for(lambda: wanted <= self.ids(), timeout)
            return wanted - self.ids()

    def ids(self) -> set[str]:
        with self._cond:
            return {m.message_id for m in self.messages}

    def data(self) -> list[bytes]:
        with self._cond:
            return [m.data for m in self.messages]


def wait_until(predicate: Callable[[], bool], timeout: float = EVENTUALLY, interval: float = 0.05) -> bool:
    """Poll *predicate* until true or *timeout*; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
