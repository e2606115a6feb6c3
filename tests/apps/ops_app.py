"""An app with the health blueprint, served by gunicorn (sync and ``-k gevent``) in
tests/test_health.py and tests/test_gevent.py. Settings from the environment."""

from __future__ import annotations

import logging
import os

from flask import request

import cloudclients
from cloudclients import current_registry, get_publisher, get_storage
from tests.apps import app_from_environment

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(process)d %(message)s")

app = app_from_environment(__name__)
app.register_blueprint(cloudclients.health_blueprint())


@app.post("/publish")
def publish() -> dict[str, object]:
    """Publish the body to ?topic=, store it in ?bucket= when given, confirm, answer the message ID."""
    data = request.get_data()
    message_id = get_publisher().publish(request.args["topic"], data).result(timeout=30)
    if "bucket" in request.args:
        get_storage().bucket(request.args["bucket"]).blob(message_id).upload_from_string(data)
    return {"pid": os.getpid(), "message_id": message_id}


@app.get("/stats")
def stats() -> dict[str, object]:
    """Registry statistics and whether gRPC runs in gevent mode in this worker."""
    status = cloudclients.gevent_status()
    return {"registry": current_registry().stats(), "pid": os.getpid(),
            "gevent_patched": status["patched"], "grpc_gevent": status["grpc_gevent"]}
