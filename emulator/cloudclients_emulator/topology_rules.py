"""Topology files: the one set of rules ``cloudclients-emulator --topology`` and the pytest plugin share.

This file exists twice, byte for byte: ``cloudclients/testing/_topology_rules.py`` and
``emulator/cloudclients_emulator/topology_rules.py``. The emulator is a distribution of its own
and must not depend on cloudclients, nor cloudclients on it; ``tests/test_testing_kit.py`` fails
when the two copies differ. Change both.

The format::

    {"topics": [{"name": "orders", "labels": {"team": "shop"},
                 "subscriptions": [{"name": "orders-worker", "ackDeadlineSeconds": 30},
                                   {"name": "orders-push", "pushConfig": {"pushEndpoint": "http://127.0.0.1:8080/"}}]}],
     "buckets": ["receipts"]}

Only those keys are accepted; a subscription takes, next to its ``name``, any field of the
service's ``Subscription`` in its JSON form. A malformed file is refused with one line that names
the file and the field: ``topology 't.json': topics[0].labels: must be an object of strings, not "x"``.
Only the standard library and protobuf are imported: the caller passes the ``Subscription``
protobuf class.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = ["SubscriptionSpec", "TopicSpec", "TopologyError", "TopologySpec", "parse_topology", "read_topology"]

_TOPIC_KEYS = ("name", "labels", "subscriptions")
# Message-typed Subscription fields whose JSON form is a string or number, not an object.
_SCALAR_JSON = {"google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.FieldMask"}


class TopologyError(ValueError):
    """A topology file is unreadable or not of the documented shape. The message is one line
    naming the file, the field and what is wrong."""


@dataclass(frozen=True)
class SubscriptionSpec:
    """One subscription of a topic.

    :ivar name: short or full name.
    :ivar body: its other fields, as written (``Subscription`` JSON).
    :ivar message: *body* parsed into the ``Subscription`` protobuf message (no name, no topic).
    """

    name: str
    body: dict[str, Any]
    message: Any


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name (short or full), labels and subscriptions."""

    name: str
    labels: dict[str, str]
    subscriptions: tuple[SubscriptionSpec, ...]


@dataclass(frozen=True)
class TopologySpec:
    """A checked topology file."""

    topics: tuple[TopicSpec, ...]
    buckets: tuple[str, ...]


def read_topology(path: str | os.PathLike[str], subscription_type: Any) -> TopologySpec:
    """Read and check the topology file at *path*.

    :param subscription_type: the ``google.pubsub.v1.Subscription`` protobuf class.
    :raises TopologyError: one line naming the file and the field.
    """
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as fh:
            spec = json.load(fh)
    except OSError as exc:
        raise TopologyError(f"topology {where!r} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSON syntax, or not UTF-8
        raise TopologyError(f"topology {where!r} is not valid JSON: {_one_line(str(exc))}") from None
    return parse_topology(spec, where, subscription_type)


def parse_topology(spec: Any, where: str, subscription_type: Any) -> TopologySpec:
    """Check a decoded topology document (*where* names it in errors).

    :raises TopologyError: one line naming *where* and the field.
    """
    if not isinstance(spec, dict):
        _fail(where, "the top level", f'must be an object {{"topics": [...], "buckets": [...]}}, not {_show(spec)}')
    for key in spec:
        if key not in ("topics", "buckets"):
            _fail(where, str(key), "unknown key; a topology has only 'topics' and 'buckets'")
    topics: list[TopicSpec] = []
    seen_topics: set[str] = set()
    seen_subscriptions: set[str] = set()
    for i, topic in enumerate(_list(spec, "topics", where, "topics")):
        at = f"topics[{i}]"
        if not isinstance(topic, dict):
            _fail(where, at, f"must be an object with a 'name', not {_show(topic)}")
        for key in topic:
            if key not in _TOPIC_KEYS:
                _fail(where, f"{at}.{key}", "unknown key; a topic has only 'name', 'labels' and 'subscriptions'")
        name = _name(topic, where, at, seen_topics)
        labels = topic.get("labels", {})
        if not isinstance(labels, dict):
            _fail(where, f"{at}.labels", f"must be an object of strings, not {_show(labels)}")
        for key, value in labels.items():
            if not isinstance(value, str):
                _fail(where, f"{at}.labels.{key}", f"must be a string, not {_show(value)}")
        subscriptions = []
        for j, sub in enumerate(_list(topic, "subscriptions", where, f"{at}.subscriptions")):
            sub_at = f"{at}.subscriptions[{j}]"
            if not isinstance(sub, dict):
                _fail(where, sub_at, f"must be an object with a 'name', not {_show(sub)}")
            sub_name = _name(sub, where, sub_at, seen_subscriptions)
            body = {k: v for k, v in sub.items() if k != "name"}
            subscriptions.append(SubscriptionSpec(sub_name, body, _message(body, where, sub_at, subscription_type)))
        topics.append(TopicSpec(name, dict(labels), tuple(subscriptions)))
    buckets = _list(spec, "buckets", where, "buckets")
    for i, bucket in enumerate(buckets):
        if not isinstance(bucket, str) or not bucket:
            _fail(where, f"buckets[{i}]", f"must be a bucket name (a non-empty string), not {_show(bucket)}")
    return TopologySpec(tuple(topics), tuple(buckets))


def _fail(where: str, field: str, problem: str) -> NoReturn:
    raise TopologyError(f"topology {where!r}: {field}: {problem}")


def _show(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _list(mapping: dict[str, Any], key: str, where: str, field: str) -> list[Any]:
    value = mapping.get(key, [])
    if not isinstance(value, list):
        _fail(where, field, f"must be a list, not {_show(value)}")
    return value


def _name(item: dict[str, Any], where: str, at: str, seen: set[str]) -> str:
    if "name" not in item:
        _fail(where, f"{at}.name", "missing; give a short name or a full projects/... name")
    name = item["name"]
    if not isinstance(name, str) or not name.strip():
        _fail(where, f"{at}.name", f"must be a non-empty string, not {_show(name)}")
    if name in seen:
        _fail(where, f"{at}.name", f"{name!r} is listed twice")
    seen.add(name)
    return name


def _message(body: dict[str, Any], where: str, at: str, subscription_type: Any) -> Any:
    from google.protobuf import json_format

    if "topic" in body:
        _fail(where, f"{at}.topic", "not allowed: a subscription belongs to the topic it is listed under")
    fields = subscription_type.DESCRIPTOR.fields_by_camelcase_name
    for key, value in body.items():
        field = fields.get(key) or subscription_type.DESCRIPTOR.fields_by_name.get(key)
        if field is None:
            _fail(where, f"{at}.{key}", f"not a field of {subscription_type.DESCRIPTOR.full_name} "
                                        "(fields in their JSON form: ackDeadlineSeconds, pushConfig, filter, ...)")
        message_type = field.message_type
        is_map = message_type is not None and message_type.GetOptions().map_entry
        if message_type is not None and not is_map and message_type.full_name not in _SCALAR_JSON \
                and not isinstance(value, dict):
            _fail(where, f"{at}.{key}", f"must be an object ({message_type.full_name}), not {_show(value)}")
    try:
        return json_format.ParseDict(body, subscription_type())
    except (json_format.ParseError, TypeError, ValueError) as exc:
        field, problem = _protobuf_problem(str(exc))
        _fail(where, f"{at}.{field}" if field else at, problem)


def _protobuf_problem(message: str) -> tuple[str, str]:
    """protobuf's ParseError text → (the dotted field path, the problem), on one line."""
    text = message.split("\n", 1)[0].strip()
    path: list[str] = []
    while match := re.match(r"Failed to parse (\w+) field: (.*)", text):
        path.append(match.group(1))
        text = match.group(2)
    unknown = re.match(r'Message type "([\w.]+)" has no field named "(\w+)"', text)
    if unknown:
        path.append(unknown.group(2))
        return ".".join(path), f"not a field of {unknown.group(1)}"
    text = re.sub(r"\s+at [\w.]+\.*$", "", text).rstrip(".")
    return ".".join(path), text
