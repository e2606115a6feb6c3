"""OIDC push end to end: the emulator signs pushes, a Flask app verifies them against the emulator's
certificates (``CLOUDCLIENTS_PUSH_CERTS_URL``) exactly as it verifies Google's in production.

The app runs on a real threaded server on loopback; the emulator POSTs to it. A subscription whose
token is for the app's audience is handled (the claims name the service account); one whose token
is for another audience is answered 403 and redelivered, never acknowledged.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask, Response
from werkzeug.serving import make_server

from cloudclients import ClientRegistry, CloudClients, ReceivedMessage, Settings, push_endpoint
from cloudclients.testing import EmulatorProcess, pull_messages, start_pubsub_emulator
from tests.helpers import wait_for

PROJECT = "oidc-e2e"
SERVICE_ACCOUNT = "pusher@oidc-e2e.iam.gserviceaccount.com"
AUDIENCE = "https://orders.example.com/push"

pytestmark = pytest.mark.slow


@dataclass
class App:
    url: str
    handled: list[ReceivedMessage] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # every push answer, in order


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with start_pubsub_emulator("cloudclients", project=PROJECT) as emulator:
        yield emulator


@pytest.fixture
def registry(emulator: EmulatorProcess) -> Iterator[ClientRegistry]:
    settings = Settings.from_mapping({"CLOUDCLIENTS_PROJECT": PROJECT, "CLOUDCLIENTS_PUBSUB_EMULATOR_HOST":
                                      emulator.host, "CLOUDCLIENTS_PUBLISH_TIMEOUT": 10}, {})
    registry = ClientRegistry.from_settings(settings, name="oidc-e2e")
    yield registry
    registry.close(timeout=5)


@pytest.fixture
def app(emulator: EmulatorProcess) -> Iterator[App]:
    flask_app = Flask(__name__)
    flask_app.config.update({
        "CLOUDCLIENTS_PROJECT": PROJECT, "CLOUDCLIENTS_EXIT_HANDLERS": False,
        # The only setting that differs from production: whose certificates verify the tokens.
        "CLOUDCLIENTS_PUSH_CERTS_URL": f"http://{emulator.host}/oauth2/v1/certs",
    })
    CloudClients(flask_app)
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    found = App(f"http://127.0.0.1:{server.server_port}/push")

    @flask_app.post("/push")
    @push_endpoint(auth="oidc", audience=AUDIENCE, service_account=SERVICE_ACCOUNT)
    def push(message: ReceivedMessage) -> None:
        found.handled.append(message)

    @flask_app.after_request
    def record(response: Response) -> Response:
        found.statuses.append(response.status_code)
        return response

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()
    thread.join(5)


def _name(collection: str) -> str:
    return f"projects/{PROJECT}/{collection}/oidc-{uuid.uuid4().hex[:12]}"


def _topic(registry: ClientRegistry) -> str:
    name = _name("topics")
    registry.publisher.create_topic(name=name)
    return name


def _push_subscription(registry: ClientRegistry, topic: str, endpoint: str, audience: str) -> str:
    name = _name("subscriptions")
    registry.subscriber.create_subscription(request={
        "name": name, "topic": topic,
        "push_config": {"push_endpoint": endpoint,
                        "oidc_token": {"service_account_email": SERVICE_ACCOUNT, "audience": audience}},
    })
    return name


def test_signed_push_is_verified_and_handled(registry: ClientRegistry, app: App) -> None:
    """A push whose token is for the app's audience verifies; the claims reach the view."""
    topic = _topic(registry)
    sub = _push_subscription(registry, topic, app.url, AUDIENCE)
    message_id = registry.publisher.publish(topic, b"order 7").result(timeout=10)
    assert wait_for(lambda: bool(app.handled), 20), f"not handled; answers so far: {app.statuses}"
    message = app.handled[0]
    assert (message.message_id, message.data, message.subscription) == (message_id, b"order 7", sub)
    assert message.claims["email"] == SERVICE_ACCOUNT
    assert message.claims["aud"] == AUDIENCE
    assert message.claims["iss"] == "https://accounts.google.com"
    assert app.statuses[0] == 204


def test_push_for_another_audience_is_refused_and_redelivered(registry: ClientRegistry, app: App) -> None:
    """A valid token for another audience: 403, the emulator retries, the message stays unacked."""
    topic = _topic(registry)
    sub = _push_subscription(registry, topic, app.url, "https://someone-else.example.com/push")
    registry.publisher.publish(topic, b"not for us").result(timeout=10)
    assert wait_for(lambda: app.statuses.count(403) >= 3, 30), f"answers so far: {app.statuses}"
    assert app.handled == []
    assert set(app.statuses) == {403}
    # Switch to pull: the refused message is still there to be pulled (it was never acknowledged).
    registry.subscriber.modify_push_config(request={"subscription": sub, "push_config": {}})
    assert [m.data for m in pull_messages(registry, sub, expected=1)] == [b"not for us"]
