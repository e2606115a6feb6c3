"""A small Flask app served by real servers (gunicorn) in the tests.

Settings come from the environment (GOOGLE_CLOUD_PROJECT, PUBSUB_EMULATOR_HOST,
STORAGE_EMULATOR_HOST), exactly as a deployed app would get them; tests pass
other settings as ``CLOUDCLIENTS_*`` environment variables.
"""

from __future__ import annotations

import os
import time

from flask import request

import cloudclients
from cloudclients import current_registry, get_publisher, get_storage
from tests.apps import app_from_environment

app = app_from_environment(__name__)


@app.post("/track")
def track() -> dict[str, object]:
    """Publish the request body to ?topic= with cloudclients.publish() (confirm mode from settings)."""
    future = cloudclients.publish(request.args["topic"], request.get_data(), pid=str(os.getpid()))
    return {"pid": os.getpid(), "done": future.done()}


@app.post("/publish")
def publish() -> dict[str, object]:
    """Publish the request body to ?topic= and confirm before answering."""
    topic = request.args["topic"]
    hold = float(request.args.get("hold", "0"))
    message_id = get_publisher().publish(topic, request.get_data(), pid=str(os.getpid())).result(timeout=30)
    if hold:
        time.sleep(hold)  # keep the worker busy so that load spreads over workers
    return {"pid": os.getpid(), "message_id": message_id, "stats": current_registry().stats()}


@app.put("/blobs/<bucket>/<name>")
def put_blob(bucket: str, name: str) -> dict[str, object]:
    """Store the request body in Storage."""
    get_storage().bucket(bucket).blob(name).upload_from_string(request.get_data())
    return {"pid": os.getpid()}


@app.get("/blobs/<bucket>/<name>")
def get_blob(bucket: str, name: str) -> bytes:
    """Read a blob back."""
    return get_storage().bucket(bucket).blob(name).download_as_bytes()


@app.get("/stats")
def stats() -> dict[str, object]:
    """This worker's registry statistics."""
    return dict(current_registry().stats())
