"""Administrative calls: create topics, subscriptions and buckets unless they exist, publish one
message — the Google side of ``flask cloudclients …`` and of the testing kit's topologies.

The command functions raise :class:`AdminError`, one line the CLI prints as it is;
:func:`create_topology` lets the service's own errors through, as ``Topology.create``
documents.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

from google.api_core import exceptions
from google.pubsub_v1 import types

__all__ = ["AdminError", "create_bucket", "create_subscription", "create_topic", "create_topology", "publish",
           "subscription_type"]

#: How long one administrative call may take, seconds (the library's own default is 600 s).
_TIMEOUT = 30


class ClientRegistry(Protocol):
    """What these calls use of a :class:`cloudclients.ClientRegistry` (this package sits below
    ``_clients``, which imports it: the type is described here, not imported)."""

    @property
    def project(self) -> str: ...
    @property
    def publisher(self) -> Any: ...
    @property
    def subscriber(self) -> Any: ...
    @property
    def storage(self) -> Any: ...


class AdminError(Exception):
    """A call failed: ``<what failed>: <the service's message>``, on one line."""


def _failed(what: str, exc: Exception) -> AdminError:
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return AdminError(f"{what}: {message}")


# -- the CLI's commands ---------------------------------------------------------------------


def create_topic(registry: ClientRegistry, path: str) -> bool:
    """Create topic *path* unless it exists; return whether this call created it.

    :raises AdminError: when the service refuses.
    """
    try:
        registry.publisher.create_topic(name=path, timeout=_TIMEOUT)
    except exceptions.AlreadyExists:
        return False
    except exceptions.GoogleAPICallError as exc:
        raise _failed(f"creating topic {path} failed", exc) from None
    return True


def create_subscription(registry: ClientRegistry, request: Mapping[str, Any]) -> bool:
    """Create the subscription *request* describes unless it exists with the same topic and push
    endpoint; return whether this call created it.

    :raises AdminError: when the service refuses, or the existing one differs.
    """
    path = request["name"]
    subscriber = registry.subscriber
    try:
        subscriber.create_subscription(request=request, timeout=_TIMEOUT)
    except exceptions.AlreadyExists:
        pass
    except exceptions.GoogleAPICallError as exc:
        raise _failed(f"creating subscription {path} failed", exc) from None
    else:
        return True
    try:
        existing = subscriber.get_subscription(subscription=path, timeout=_TIMEOUT)
    except exceptions.GoogleAPICallError as exc:
        raise _failed(f"reading existing subscription {path} failed", exc) from None
    push_endpoint = request.get("push_config", {}).get("push_endpoint")
    differences = []
    if existing.topic != request["topic"]:
        differences.append(f"its topic is {existing.topic}")
    if (existing.push_config.push_endpoint or None) != push_endpoint:
        differences.append(f"its push endpoint is {existing.push_config.push_endpoint or '(pull)'}")
    if differences:
        raise AdminError(f"subscription {path} exists but {' and '.join(differences)}. "
                         "Fix: delete it or use another name.")
    return False


def create_bucket(registry: ClientRegistry, name: str, location: str | None) -> bool:
    """Create bucket *name* unless this project already has it; return whether this call created it.

    :raises AdminError: when the service refuses, or the name is another project's.
    """
    storage = registry.storage
    try:
        storage.create_bucket(name, location=location, timeout=_TIMEOUT)
    except exceptions.Conflict:
        # Bucket names are global: 409 also means "someone else's bucket".
        try:
            storage.get_bucket(name, timeout=_TIMEOUT)
        except exceptions.GoogleAPICallError as exc:
            raise _failed(f"bucket name {name!r} is taken by another project", exc) from None
        return False
    except exceptions.GoogleAPICallError as exc:
        raise _failed(f"creating bucket {name!r} failed", exc) from None
    return True


def publish(registry: ClientRegistry, path: str, data: bytes, *, ordering_key: str,
            attributes: Mapping[str, str], timeout: float) -> str:
    """Publish one message and wait for its ID.

    :raises AdminError: when publishing fails or is not confirmed within *timeout* seconds (a
        publisher that cannot be built, such as a ``ConfigError``, included).
    """
    try:
        future = registry.publisher.publish(path, data, ordering_key=ordering_key, **attributes)
        return str(future.result(timeout=timeout))
    except (exceptions.GoogleAPICallError, RuntimeError, ValueError, TimeoutError) as exc:
        raise _failed(f"publishing to {path} failed", exc) from None


# -- the testing kit's topologies -----------------------------------------------------------


def subscription_type() -> Any:
    """The protobuf message type of a subscription, which topology files are checked against."""
    return types.Subscription.pb()


def create_topology(registry: ClientRegistry, topics: Mapping[str, list[dict[str, Any]]],
                    labels: Mapping[str, dict[str, str]], buckets: tuple[str, ...]) -> None:
    """Create *topics* (each with its subscriptions, as ``Subscription`` JSON), their *labels* and
    *buckets* with *registry*'s clients; what already exists is left as it is.

    :raises google.api_core.exceptions.GoogleAPICallError: for anything the service refuses.
    """
    project = registry.project
    for topic, subscriptions in topics.items():
        name = _full(topic, project, "topics")
        with contextlib.suppress(exceptions.AlreadyExists):
            registry.publisher.create_topic(request={"name": name, "labels": dict(labels.get(topic, {}))})
        for spec in subscriptions:
            body = {k: v for k, v in spec.items() if k != "name"}
            subscription = types.Subscription.from_json(json.dumps(body))
            subscription.name = _full(spec["name"], project, "subscriptions")
            subscription.topic = name
            if subscription.dead_letter_policy.dead_letter_topic:
                dlq = subscription.dead_letter_policy.dead_letter_topic
                subscription.dead_letter_policy.dead_letter_topic = _full(dlq, project, "topics")
            with contextlib.suppress(exceptions.AlreadyExists):
                registry.subscriber.create_subscription(request=subscription)
    for bucket in buckets:
        with contextlib.suppress(exceptions.Conflict):
            registry.storage.create_bucket(bucket)


def _full(name: str, project: str, collection: str) -> str:
    return name if name.startswith("projects/") else f"projects/{project}/{collection}/{name}"
