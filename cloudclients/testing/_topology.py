"""Topologies: the topics, subscriptions and buckets a test session starts with.

The same JSON as ``cloudclients-emulator --topology``::

    {"topics": [{"name": "orders",
                 "subscriptions": [{"name": "orders-worker", "ackDeadlineSeconds": 30},
                                   {"name": "orders-push", "pushConfig": {"pushEndpoint": "http://127.0.0.1:8080/push"}}]}],
     "buckets": ["receipts"]}

Short names resolve against the project; a subscription takes any field of the
service's ``Subscription`` in its JSON form. Created through the real clients,
so it works against either Pub/Sub emulator (and would against the service).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._clients import ClientRegistry

__all__ = ["Topology", "TopologyError", "load_topology"]


class TopologyError(ValueError):
    """A topology file is unreadable or not of the documented shape (the message says where)."""


@dataclass(frozen=True)
class Topology:
    """Topics (each with its subscriptions, as ``Subscription`` JSON) and buckets.

    :ivar topics: ``{short or full topic name: [subscription JSON, …]}``.
    :ivar buckets: bucket names.
    :ivar labels: ``{topic name: labels}`` for topics that have them.
    """

    topics: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)
    buckets: tuple[str, ...] = ()
    labels: Mapping[str, dict[str, str]] = field(default_factory=dict)

    def create(self, registry: ClientRegistry) -> None:
        """Create everything with *registry*'s clients; what already exists is left as it is.

        :raises google.api_core.exceptions.GoogleAPICallError: for anything the service refuses.
        """
        from google.api_core.exceptions import AlreadyExists, Conflict
        from google.pubsub_v1 import types

        project = registry.project
        for topic, subscriptions in self.topics.items():
            name = _full(topic, project, "topics")
            with contextlib.suppress(AlreadyExists):
                registry.publisher.create_topic(request={"name": name, "labels": dict(self.labels.get(topic, {}))})
            for spec in subscriptions:
                body = {k: v for k, v in spec.items() if k != "name"}
                subscription = types.Subscription.from_json(json.dumps(body))
                subscription.name = _full(spec["name"], project, "subscriptions")
                subscription.topic = name
                if subscription.dead_letter_policy.dead_letter_topic:
                    dlq = subscription.dead_letter_policy.dead_letter_topic
                    subscription.dead_letter_policy.dead_letter_topic = _full(dlq, project, "topics")
                with contextlib.suppress(AlreadyExists):
                    registry.subscriber.create_subscription(request=subscription)
        for bucket in self.buckets:
            with contextlib.suppress(Conflict):
                registry.storage.create_bucket(bucket)


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read and check a topology file.

    :raises TopologyError: naming the file and what is wrong with it.
    """
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as fh:
            spec = json.load(fh)
    except OSError as exc:
        raise TopologyError(f"topology {where!r} cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise TopologyError(f"topology {where!r} is not valid JSON: {exc}") from None
    if not isinstance(spec, dict) or set(spec) - {"topics", "buckets"}:
        raise TopologyError(f"topology {where!r} must be an object with only 'topics' and 'buckets'")
    topics: dict[str, list[dict[str, Any]]] = {}
    labels: dict[str, dict[str, str]] = {}
    for i, topic in enumerate(_list(spec, "topics", where)):
        if not isinstance(topic, dict) or not isinstance(topic.get("name"), str) or not topic["name"]:
            raise TopologyError(f"topology {where!r}: topics[{i}] needs a 'name' string")
        subscriptions = _list(topic, "subscriptions", f"{where} topics[{i}]")
        for j, sub in enumerate(subscriptions):
            if not isinstance(sub, dict) or not isinstance(sub.get("name"), str) or not sub["name"]:
                raise TopologyError(f"topology {where!r}: topics[{i}].subscriptions[{j}] needs a 'name' string")
        topics[topic["name"]] = list(subscriptions)
        if topic.get("labels"):
            labels[topic["name"]] = dict(topic["labels"])
    buckets = _list(spec, "buckets", where)
    if not all(isinstance(b, str) and b for b in buckets):
        raise TopologyError(f"topology {where!r}: 'buckets' must be a list of names")
    return Topology(topics=topics, buckets=tuple(buckets), labels=labels)


def _list(mapping: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = mapping.get(key, [])
    if not isinstance(value, list):
        raise TopologyError(f"topology {where!r}: {key!r} must be a list")
    return value


def _full(name: str, project: str, collection: str) -> str:
    return name if name.startswith("projects/") else f"projects/{project}/{collection}/{name}"
