"""Topologies: the topics, subscriptions and buckets a test session starts with.

The same JSON as ``cloudclients-emulator --topology``::

    {"topics": [{"name": "orders",
                 "subscriptions": [{"name": "orders-worker", "ackDeadlineSeconds": 30},
                                   {"name": "orders-push", "pushConfig": {"pushEndpoint": "http://127.0.0.1:8080/push"}}]}],
     "buckets": ["receipts"]}

Short names resolve against the project; a topic may have ``labels``; a subscription takes any
field of the service's ``Subscription`` in its JSON form. Nothing else is accepted: the rules
(``_topology_rules.py``) are the emulator's own, so a file either works in both places or is
refused by both with the same one line. Created through the real clients, so it works against
either Pub/Sub emulator (and would against the service).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._clients import ClientRegistry
from ._topology_rules import TopologyError, read_topology

__all__ = ["Topology", "TopologyError", "load_topology"]

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
        from .._google.admin import create_topology

        create_topology(registry, self.topics, self.labels, self.buckets)


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read and check a topology file, by the same rules as ``cloudclients-emulator --topology``.

    :raises TopologyError: one line naming the file and the field (``topology 't.json':
        topics[0].labels: must be an object of strings, not "x"``).
    """
    from .._google.admin import subscription_type

    spec = read_topology(path, subscription_type())
    return Topology(
        topics={t.name: [{"name": s.name, **s.body} for s in t.subscriptions] for t in spec.topics},
        buckets=spec.buckets,
        labels={t.name: t.labels for t in spec.topics if t.labels},
    )
