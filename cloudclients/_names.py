"""Pub/Sub resource names: short names resolved against the app's project."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["resolve_subscription", "resolve_topic"]


#: A project ID, or a function returning it (called only for a short name: it may discover it).
Project = str | Callable[[], str]


def _resolve(name: object, project: Project, collection: str, example: str) -> str:
    if isinstance(name, str) and name and "/" not in name and not name.isspace():
        return f"projects/{project if isinstance(project, str) else project()}/{collection}/{name}"
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != collection or not parts[1] or not parts[3]:
        kind = collection[:-1]
        raise ValueError(
            f"{kind}={name!r} is not a {kind} name. Fix: pass a short name ({example!r}, resolved "
            f"against CLOUDCLIENTS_PROJECT) or 'projects/P/{collection}/{example}'."
        )
    return str(name)


def resolve_topic(topic: str, project: Project) -> str:
    """Return the full topic name for *topic* (short names use *project*).

    :raises ValueError: if it is neither a short name nor ``projects/P/topics/T``.
    """
    return _resolve(topic, project, "topics", "my-topic")


def resolve_subscription(subscription: str, project: Project) -> str:
    """Return the full subscription name for *subscription* (short names use *project*).

    :raises ValueError: if it is neither a short name nor ``projects/P/subscriptions/S``.
    """
    return _resolve(subscription, project, "subscriptions", "my-subscription")
