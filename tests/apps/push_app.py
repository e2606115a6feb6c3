"""A Flask app receiving Pub/Sub pushes, served by gunicorn in tests/test_push.py.

Settings come from ``CLOUDCLIENTS_*`` environment variables (plus the emulator
ones). Every handled push is appended as one JSON line to ``$CC_PUSH_RECORD``;
a message with the attribute ``fail=once`` fails (500) on its first delivery.
"""

from __future__ import annotations

import json
import os

from cloudclients import ReceivedMessage, current_registry, push_endpoint
from tests.apps import app_from_environment

app = app_from_environment(__name__)
RECORD = os.environ.get("CC_PUSH_RECORD", os.devnull)


def record(entry: dict[str, object]) -> None:
    # One write of one line with O_APPEND: lines from several workers never interleave.
    with open(RECORD, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def failed_before(message_id: str) -> bool:
    with open(RECORD, encoding="utf-8") as fh:
        return any(json.loads(line).get("failed") == message_id for line in fh)


@app.post("/push")
@push_endpoint
def push(message: ReceivedMessage) -> None:
    """Record the message; fail the first delivery of messages marked fail=once."""
    if message.attributes.get("fail") == "once" and not failed_before(message.message_id):
        record({"failed": message.message_id, "pid": os.getpid()})
        raise RuntimeError("failing the first delivery on purpose")
    record({
        "id": message.message_id, "data": message.text, "attributes": dict(message.attributes),
        "publish_time": message.publish_time.isoformat(), "ordering_key": message.ordering_key,
        "subscription": message.subscription, "delivery_attempt": message.delivery_attempt, "pid": os.getpid(),
    })


@app.get("/stats")
def stats() -> dict[str, object]:
    """This worker's registry statistics (also the readiness probe of tests/servers.py)."""
    return dict(current_registry().stats())
