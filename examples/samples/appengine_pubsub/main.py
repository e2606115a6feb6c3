"""Pub/Sub on App Engine, on cloudclients: a publish form and two push handlers.

The port of Google's App Engine Pub/Sub samples (flexible and standard Python 3
environments; see ``examples/samples/README.md``)::

    GET  /                                the messages (and token claims) this process received,
                                          and a form
    POST /                                publish the form's ``payload`` to PUBSUB_TOPIC; 200 once
                                          the service has the message, 503 if it could not be published
    POST /pubsub/push?token=T             push endpoint authenticated by the shared token T alone
    POST /push-handlers/receive_messages?token=T
                                          push endpoint with the shared token *and* Pub/Sub's
                                          OIDC token (``Authorization: Bearer``)

A push is answered ``200 OK`` (acknowledged) once recorded; a wrong or missing
``?token=`` gets ``400 Invalid request``, as in the samples. On the OIDC route,
a missing or invalid bearer token gets 401 and a token for another audience or
service account 403 — except that while a Pub/Sub emulator is configured a push
without a token passes (emulators do not sign pushes), so the same settings
serve local runs and production.

Configuration, from the environment (``app.yaml``'s ``env_variables``):

``PUBSUB_TOPIC`` (required)
    the topic the form publishes to: a short name or ``projects/P/topics/T``.
``PUBSUB_VERIFICATION_TOKEN`` (required)
    the shared secret the push subscriptions carry in their endpoint's ``?token=``.
``PUSH_AUDIENCE`` (default ``example.com``, what the sample's ``gcloud`` command sets)
    the ``aud`` of the push subscription's OIDC token.
``PUSH_SERVICE_ACCOUNT`` (optional)
    the service account the push subscription signs with; when set, tokens of any
    other account are refused.
``GOOGLE_CLOUD_PROJECT`` (optional: App Engine sets it, and it is discovered otherwise),
``PUBSUB_EMULATOR_HOST`` (local runs)
    read by cloudclients itself.
``FLASK_<KEY>``
    any other Flask or cloudclients setting (``app.config.from_prefixed_env()``), e.g.
    ``FLASK_CLOUDCLIENTS_PUBLISH_TIMEOUT=5``.

Run it locally on the emulators (from the repository root)::

    cloudclients-emulator --project local-project \\
        --topology examples/samples/appengine_pubsub/topology.json &
    export PUBSUB_EMULATOR_HOST=127.0.0.1:8085 GOOGLE_CLOUD_PROJECT=local-project
    export PUBSUB_TOPIC=messages PUBSUB_VERIFICATION_TOKEN=local-dev-token
    gunicorn --preload -w 2 --threads 4 -b 127.0.0.1:8080 examples.samples.appengine_pubsub.main:app

then submit the form at http://127.0.0.1:8080/: the topology's push subscriptions
deliver each message back to both push endpoints. On App Engine, see the README.
"""

from __future__ import annotations

import hmac
import os
from collections import deque
from typing import Any

from flask import Flask, Request, current_app, render_template, request

import cloudclients
from cloudclients import CloudClients, ReceivedMessage, push_endpoint

#: What this process received, newest last (bounded: it is a demo page, not storage).
#: As in the samples, every instance (here: every worker) shows only its own.
MESSAGES: deque[str] = deque(maxlen=100)
CLAIMS: deque[dict[str, Any]] = deque(maxlen=100)

#: The token claims shown on the page (never the token itself).
SHOWN_CLAIMS = ("email", "email_verified", "aud", "sub", "iss")


def _required(name: str, example: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise RuntimeError(f"{name} is not set. Fix: export {name}={example} (app.yaml: env_variables).")
    return value


def create_app() -> Flask:
    """Build the app from the environment (see the module docstring).

    :raises RuntimeError: if PUBSUB_TOPIC or PUBSUB_VERIFICATION_TOKEN is not set.
    :raises cloudclients.ConfigError: for an invalid cloudclients setting.
    """
    app = Flask(__name__)
    app.config["PUBSUB_TOPIC"] = _required("PUBSUB_TOPIC", "messages")
    app.config["PUBSUB_VERIFICATION_TOKEN"] = _required("PUBSUB_VERIFICATION_TOKEN", "<a long random string>")
    # The OIDC route: tokens are verified when present; tokenless pushes pass only while a
    # Pub/Sub emulator is configured. (/pubsub/push uses its own verifier instead.)
    app.config["CLOUDCLIENTS_PUSH_AUTH"] = "oidc_or_emulator"
    app.config["CLOUDCLIENTS_PUSH_AUDIENCE"] = os.environ.get("PUSH_AUDIENCE", "example.com")
    if os.environ.get("PUSH_SERVICE_ACCOUNT"):
        app.config["CLOUDCLIENTS_PUSH_SERVICE_ACCOUNT"] = os.environ["PUSH_SERVICE_ACCOUNT"]
    app.config.from_prefixed_env()
    CloudClients(app)  # validates every setting now; builds no client until a request needs one

    @app.get("/")
    def index() -> str:
        return render_template("index.html", messages=list(MESSAGES), claims=list(CLAIMS))

    @app.post("/")
    def publish() -> tuple[str, int]:
        payload = request.form.get("payload", "Example payload")
        # Confirmed before the response leaves: a 200 means the service has the message;
        # a failure answers 503 (cloudclients.PublishError) instead of a silent "OK".
        cloudclients.publish(current_app.config["PUBSUB_TOPIC"], payload)
        return "OK", 200

    @app.post("/pubsub/push")
    @push_endpoint(verify=shared_token)
    def receive(message: ReceivedMessage) -> tuple[str, int]:
        remember(message)
        return "OK", 200

    @app.post("/push-handlers/receive_messages")
    @push_endpoint(verify=shared_token, auth="oidc_or_emulator")  # both, the shared token first
    def receive_authenticated(message: ReceivedMessage) -> tuple[str, int]:
        if message.claims:  # a tokenless push from an emulator has none
            CLAIMS.append({name: message.claims[name] for name in SHOWN_CLAIMS if name in message.claims})
        remember(message)
        return "OK", 200

    return app


def shared_token(req: Request) -> bool | tuple[str, int]:
    """Accept a request whose ``?token=`` is PUBSUB_VERIFICATION_TOKEN; answer 400 otherwise.

    Runs before the body is read (as ``push_endpoint``'s ``verify=``), compares in
    constant time, and never echoes the token. Returning a response refuses with it,
    as the sample's ``return "Invalid request", 400`` does.
    """
    expected = current_app.config["PUBSUB_VERIFICATION_TOKEN"].encode()
    if not hmac.compare_digest(req.args.get("token", "").encode(), expected):
        return "Invalid request", 400
    return True


def remember(message: ReceivedMessage) -> None:
    # Shown as text (the template escapes it); bytes that are not UTF-8 must not turn a
    # delivered message into a 500 that Pub/Sub would retry forever.
    MESSAGES.append(message.data.decode("utf-8", errors="replace"))


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
