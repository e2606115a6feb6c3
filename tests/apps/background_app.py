"""A Flask app with a background subscription, served by gunicorn in tests/test_background.py.

``$CC_BG_SUBSCRIPTION`` is consumed by a streaming pull in every worker (started by
gunicorn's ``post_worker_init``, see background_conf.py); each handled message is
appended as one JSON line to ``$CC_BG_RECORD`` after ``$CC_BG_DELAY`` seconds of "work".
"""

from __future__ import annotations

import json
import logging
import os
import time

import cloudclients
from cloudclients import ReceivedMessage, current_registry
from tests.apps import app_from_environment

# A deployed app configures logging; the test reads the lifecycle lines from the server log.
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(process)d %(message)s")

app = app_from_environment(__name__)
RECORD = os.environ.get("CC_BG_RECORD", os.devnull)
DELAY = float(os.environ.get("CC_BG_DELAY", "0.02"))


def handle(message: ReceivedMessage) -> None:
    """Simulate work, then record the message (one O_APPEND write per line)."""
    time.sleep(DELAY)
    line = json.dumps({"data": message.text, "id": message.message_id, "pid": os.getpid()}) + "\n"
    with open(RECORD, "a", encoding="utf-8") as fh:
        fh.write(line)


background = cloudclients.subscribe(
    os.environ.get("CC_BG_SUBSCRIPTION", "unset"), handle, app=app, max_messages=10, max_workers=4
)


@app.get("/stats")
def stats() -> dict[str, object]:
    """This worker's registry and background-subscription statistics."""
    return {"registry": current_registry().stats(), "background": background.stats()}
