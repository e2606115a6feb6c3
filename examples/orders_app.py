"""Example: an orders service that publishes events and stores receipts.

    POST /orders      {"item": "book", "qty": 2} → publishes an "order-created"
                      event and stores a JSON receipt in Storage
    GET  /receipts    lists stored receipts
    GET  /stats       this worker's cloudclients statistics

Configuration comes from the environment: GOOGLE_CLOUD_PROJECT,
PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST for local runs, plus
ORDERS_TOPIC (default "orders") and RECEIPTS_BUCKET (default "receipts").
"""

from __future__ import annotations

import json
import os
import uuid

from flask import Flask, request

from cloudclients import CloudClients, current_registry, get_publisher, get_storage

cloudclients = CloudClients()


def create_app() -> Flask:
    """Application factory."""
    app = Flask(__name__)
    app.config["ORDERS_TOPIC"] = os.environ.get("ORDERS_TOPIC", "orders")
    app.config["RECEIPTS_BUCKET"] = os.environ.get("RECEIPTS_BUCKET", "receipts")
    cloudclients.init_app(app)  # validates settings, creates no client

    @app.post("/orders")
    def create_order() -> tuple[dict[str, object], int]:
        order = request.get_json(force=True)
        order_id = uuid.uuid4().hex[:12]
        project = CloudClients.get_settings().project
        topic = f"projects/{project}/topics/{app.config['ORDERS_TOPIC']}"
        event = json.dumps({"order_id": order_id, **order}).encode()
        message_id = get_publisher().publish(topic, event, kind="order-created").result(timeout=30)
        receipt = get_storage().bucket(app.config["RECEIPTS_BUCKET"]).blob(f"receipts/{order_id}.json")
        receipt.upload_from_string(event, content_type="application/json")
        return {"order_id": order_id, "message_id": message_id, "pid": os.getpid()}, 201

    @app.get("/receipts")
    def receipts() -> dict[str, object]:
        blobs = get_storage().list_blobs(app.config["RECEIPTS_BUCKET"], prefix="receipts/")
        return {"receipts": [b.name for b in blobs]}

    @app.get("/stats")
    def stats() -> dict[str, object]:
        return dict(current_registry().stats())

    return app


app = create_app()
