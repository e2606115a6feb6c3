"""Example: an orders service that publishes events, stores receipts and consumes its own events.

    POST /orders             {"item": "book", "qty": 2} -> stores a JSON receipt in Storage and
                             publishes an "order-created" event (confirmed before the 201)
    POST /pubsub/orders      push endpoint of the "orders-push" subscription: marks the order
                             as processed in Storage (an exception would nack: Pub/Sub retries)
    GET  /receipts           the stored receipts, with their processed flag
    GET  /stats              this worker's cloudclients statistics (pid, clients built)
    GET  /healthz            Pub/Sub and Storage reachability (503 when one fails)

Configuration comes from the environment: GOOGLE_CLOUD_PROJECT, PUBSUB_EMULATOR_HOST /
STORAGE_EMULATOR_HOST for local runs, ORDERS_TOPIC (default "orders"), RECEIPTS_BUCKET (default
"receipts") and, in production, PUSH_AUDIENCE (the URL the push subscription's OIDC token is
issued for) and PUSH_SERVICE_ACCOUNT.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from flask import Flask, abort, request

from cloudclients import (
    CloudClients,
    ReceivedMessage,
    current_registry,
    get_storage,
    health_blueprint,
    publish,
    push_endpoint,
)

cloudclients = CloudClients()


def create_app() -> Flask:
    """Application factory."""
    app = Flask(__name__)
    app.config["ORDERS_TOPIC"] = os.environ.get("ORDERS_TOPIC", "orders")
    app.config["RECEIPTS_BUCKET"] = os.environ.get("RECEIPTS_BUCKET", "receipts")
    # One setting for local runs and production: push tokens are verified when present, and
    # tokenless pushes pass only while a Pub/Sub emulator is configured.
    app.config["CLOUDCLIENTS_PUSH_AUTH"] = "oidc_or_emulator"
    for key in ("PUSH_AUDIENCE", "PUSH_SERVICE_ACCOUNT"):
        if os.environ.get(key):
            app.config[f"CLOUDCLIENTS_{key}"] = os.environ[key]
    cloudclients.init_app(app)  # validates every setting here, builds no client
    app.register_blueprint(health_blueprint())

    def bucket() -> Any:  # a google.cloud.storage.Bucket of this process's client
        return get_storage().bucket(app.config["RECEIPTS_BUCKET"])

    @app.post("/orders")
    def create_order() -> tuple[dict[str, object], int]:
        order = request.get_json(silent=True)
        if not isinstance(order, dict) or not isinstance(order.get("item"), str):
            abort(400, description='send a JSON object like {"item": "book", "qty": 2}')
        order_id = uuid.uuid4().hex[:12]
        event = json.dumps({"order_id": order_id, "item": order["item"], "qty": order.get("qty", 1)})
        bucket().blob(f"receipts/{order_id}.json").upload_from_string(event, content_type="application/json")
        project = CloudClients.get_settings().project
        # Tracked for this request: confirmed before the response leaves, or a 503 (PublishError).
        publish(f"projects/{project}/topics/{app.config['ORDERS_TOPIC']}", event, kind="order-created")
        return {"order_id": order_id, "pid": os.getpid()}, 201

    @app.post("/pubsub/orders")
    @push_endpoint
    def order_created(message: ReceivedMessage) -> None:
        event = message.json()
        marker = {"order_id": event["order_id"], "message_id": message.message_id, "pid": os.getpid()}
        bucket().blob(f"processed/{event['order_id']}.json").upload_from_string(
            json.dumps(marker), content_type="application/json"
        )  # returning None answers 204: acked

    @app.get("/receipts")
    def receipts() -> dict[str, object]:
        processed = {b.name.rsplit("/", 1)[1] for b in bucket().list_blobs(prefix="processed/")}
        return {
            "receipts": [
                {"name": b.name, "processed": b.name.rsplit("/", 1)[1] in processed}
                for b in bucket().list_blobs(prefix="receipts/")
            ]
        }

    @app.get("/stats")
    def stats() -> dict[str, object]:
        return dict(current_registry().stats())

    return app


app = create_app()
