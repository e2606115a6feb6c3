"""Pub/Sub push on Cloud Run, on cloudclients: a receive-only service.

The port of Google's Cloud Run Pub/Sub tutorial service (see
``examples/samples/README.md``)::

    POST /    a push from the subscription: prints ``Hello <data>!`` (``Hello World!`` for a
              message without data) and answers 204, which acknowledges it

Pub/Sub retries anything but a 2xx, so the endpoint never fails on content it
can handle: data that is not UTF-8 is printed with replacement characters. A
body that is not a push message gets one 400 listing what is wrong (from
cloudclients); payload-unwrapped pushes (``no_wrapper``) are read too.

Authentication: the tutorial deploys the service with
``--no-allow-unauthenticated`` and gives the push subscription's service
account the invoker role, so Cloud Run has already checked the token:
``CLOUDCLIENTS_PUSH_AUTH=platform`` (cloudclients logs that once at WARNING).
A public service verifies the token itself instead::

    FLASK_CLOUDCLIENTS_PUSH_AUDIENCE=https://pubsub-tutorial-….run.app/   # CLOUDCLIENTS_PUSH_AUTH=oidc

The service uses no client and needs no project: nothing to configure on Cloud
Run. Any Flask or cloudclients setting can be given as ``FLASK_<KEY>``
(``app.config.from_prefixed_env()``).

Run it locally on the emulator (from the repository root)::

    cloudclients-emulator --project local-project --topology examples/samples/run_pubsub/topology.json &
    gunicorn -b 127.0.0.1:8080 examples.samples.run_pubsub.main:app &
    python - <<'EOF'
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import pubsub_v1
    import os; os.environ["PUBSUB_EMULATOR_HOST"] = "127.0.0.1:8085"
    publisher = pubsub_v1.PublisherClient(credentials=AnonymousCredentials())
    publisher.publish("projects/local-project/topics/myRunTopic", b"Cloud Run").result()
    EOF

and gunicorn prints ``Hello Cloud Run!``. Or post a hand-made push::

    curl -i localhost:8080/ -H 'Content-Type: application/json' \\
         -d '{"message": {"data": "'"$(printf World | base64)"'"}}'
"""

from __future__ import annotations

import os
import sys

from flask import Flask

from cloudclients import CloudClients, ReceivedMessage, push_endpoint


def create_app() -> Flask:
    """Build the service; settings may come from ``FLASK_*`` environment variables."""
    app = Flask(__name__)
    app.config["CLOUDCLIENTS_PUSH_AUTH"] = "platform"  # Cloud Run's invoker IAM checks every push
    app.config.from_prefixed_env()
    CloudClients(app)

    @app.post("/")
    @push_endpoint
    def index(message: ReceivedMessage) -> tuple[str, int]:
        name = message.data.decode("utf-8", errors="replace").strip() or "World"
        # stdout is the service's log on Cloud Run. One write per line: print() writes the text
        # and the newline separately, so with PYTHONUNBUFFERED (the usual Cloud Run setting)
        # lines from concurrent requests ran together. Flushed before the acknowledgement.
        sys.stdout.write(f"Hello {name}!\n")
        sys.stdout.flush()
        return "", 204

    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
