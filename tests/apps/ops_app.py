"""An app with the health blueprint, served by gunicorn (sync and ``-k gevent``) in
tests/test_health.py and tests/test_gevent.py. Settings from the environment."""

from __future__ import annotations

import logging
import os

from flask import Flask, request

import cloudclients
from cloudclients import CloudClients, current_registry, get_publisher, get_storage

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(process)d %(message)s")

app = Flask(__name__)
app.config.update(
    {k: v for k, v in os.environ.items() if k.startswith("CLOUDCLIENTS_") and not k.startswith("CLOUDCLIENTS_TEST_")}
)
CloudClients(app)
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
    from cloudclients._gevent import grpc_gevent_enabled, monkey_patched

    return {"registry": current_registry().stats(), "pid": os.getpid(),
            "gevent_patched": monkey_patched(), "grpc_gevent": grpc_gevent_enabled()}
