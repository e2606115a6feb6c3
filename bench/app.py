"""The web app `make bench` loads under gunicorn, one variant per run.

``BENCH_VARIANT`` picks how ``POST /publish`` reaches Pub/Sub; every variant
publishes one 64-byte message to ``BENCH_TOPIC`` and answers 204 only once it
is confirmed (``after`` confirms after the response instead):

``cloudclients``  ``cloudclients.publish()``, confirmed before the response
``after``         the same with ``CLOUDCLIENTS_PUBLISH_CONFIRM=after_response``
``global``        the best hand-rolled pattern: a lazy module global behind a
                  lock, rebuilt when the pid changes, ``.result()`` in the view
``per_request``   the common mistake: a client per request on ``g``, closed at
                  teardown
``noop``          no publish at all: the server's ceiling
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask, g

import cloudclients

VARIANT = os.environ.get("BENCH_VARIANT", "cloudclients")
TOPIC = os.environ.get("BENCH_TOPIC", "projects/bench-project/topics/bench")
PAYLOAD = b"x" * 64

app = Flask(__name__)

if VARIANT in ("cloudclients", "after"):
    app.config["CLOUDCLIENTS_PUBLISH_CONFIRM"] = "after_response" if VARIANT == "after" else "before_response"
    if os.environ.get("BENCH_BATCH_MAX_LATENCY"):
        app.config["CLOUDCLIENTS_BATCH_MAX_LATENCY"] = float(os.environ["BENCH_BATCH_MAX_LATENCY"])
    cloudclients.CloudClients(app)

    @app.post("/publish")
    def publish_cloudclients() -> tuple[str, int]:
        cloudclients.publish(TOPIC, PAYLOAD)
        return "", 204

elif VARIANT == "global":
    from google.cloud import pubsub_v1

    _client: Any = None
    _pid = 0
    _lock = threading.Lock()

    def _publisher() -> Any:
        global _client, _pid  # noqa: PLW0603 - the very pattern being measured
        if _client is None or _pid != os.getpid():
            with _lock:
                if _client is None or _pid != os.getpid():
                    _client = pubsub_v1.PublisherClient()  # PUBSUB_EMULATOR_HOST from the environment
                    _pid = os.getpid()
        return _client

    @app.post("/publish")
    def publish_global() -> tuple[str, int]:
        _publisher().publish(TOPIC, PAYLOAD).result(timeout=30)
        return "", 204

elif VARIANT == "per_request":
    from google.cloud import pubsub_v1

    def _request_publisher() -> Any:
        if "publisher" not in g:
            g.publisher = pubsub_v1.PublisherClient()
        return g.publisher

    @app.teardown_appcontext
    def _close_publisher(exc: BaseException | None) -> None:
        client = g.pop("publisher", None)
        if client is not None:
            client.stop()  # flush, then close the channel
            client.transport.close()

    @app.post("/publish")
    def publish_per_request() -> tuple[str, int]:
        _request_publisher().publish(TOPIC, PAYLOAD).result(timeout=30)
        return "", 204

elif VARIANT == "noop":

    @app.post("/publish")
    def publish_noop() -> tuple[str, int]:
        return "", 204

else:
    raise SystemExit(f"BENCH_VARIANT={VARIANT!r}: use cloudclients, after, global, per_request or noop")


@app.get("/ready")
def ready() -> str:
    return "ok"
