"""The port of Google's App Engine Pub/Sub samples (examples/samples/appengine_pubsub): the publish
form really publishes (or says it could not), pushes are accepted only with the shared ``?token=``
(and, on the authenticated route, a valid OIDC token too), minimal and full envelopes are read, and
neither the token nor a message can turn into a 500 or leak into a page or a log."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from cloudclients.testing import TEST_PROJECT, TopicHandle
from tests.helpers import wait_for
from tests.oidc import SERVICE_ACCOUNT, LocalIssuer
from tests.sample_ports import gunicorn, imported

TOKEN = "shared-Secret-7f3a9c"  # what the push subscriptions' URLs carry
PUSH = "/pubsub/push"
AUTH_PUSH = "/push-handlers/receive_messages"
AUDIENCE = "https://samples-test.appspot.com/push-handlers/receive_messages"


def envelope(data: bytes, **message: Any) -> dict[str, Any]:
    return {"message": {"data": base64.b64encode(data).decode(), **message}}


@pytest.fixture
def port_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The port's own settings, as app.yaml's env_variables would give them."""
    monkeypatch.setenv("PUBSUB_TOPIC", "samples-messages")
    monkeypatch.setenv("PUBSUB_VERIFICATION_TOKEN", TOKEN)
    monkeypatch.setenv("FLASK_CLOUDCLIENTS_EXIT_HANDLERS", "false")
    return monkeypatch


@pytest.fixture
def sample(cloudclients_env: dict[str, str], port_env: pytest.MonkeyPatch, pubsub_topic: TopicHandle
           ) -> Iterator[ModuleType]:
    """The port on the emulators, publishing to a fresh topic."""
    port_env.setenv("PUBSUB_TOPIC", pubsub_topic.topic_id)  # a short name: the project is GOOGLE_CLOUD_PROJECT
    with imported("appengine_pubsub") as module:
        yield module


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer()
    yield issuer
    issuer.stop()


@pytest.fixture
def production(port_env: pytest.MonkeyPatch, issuer: LocalIssuer) -> Iterator[ModuleType]:
    """The port configured as on App Engine: no emulator, OIDC tokens from a (local) issuer."""
    port_env.setenv("GOOGLE_CLOUD_PROJECT", TEST_PROJECT)
    port_env.setenv("PUSH_AUDIENCE", AUDIENCE)
    port_env.setenv("PUSH_SERVICE_ACCOUNT", SERVICE_ACCOUNT)
    port_env.setenv("FLASK_CLOUDCLIENTS_PUSH_CERTS_URL", issuer.certs_url)
    with imported("appengine_pubsub") as module:
        yield module


def page(module: ModuleType) -> str:
    response = module.app.test_client().get("/")
    assert response.status_code == 200
    return str(response.get_data(as_text=True))


def push(module: ModuleType, query: str, body: Any, path: str = PUSH, **headers: str) -> Any:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return module.app.test_client().post(f"{path}{query}", data=data, headers=headers)


# -- the publish form -------------------------------------------------------------------


def test_index_shows_the_form_and_no_message_yet(sample: ModuleType) -> None:
    """GET / answers the page with the publish form and an empty list."""
    html = page(sample)
    assert '<form method="post">' in html and 'name="payload"' in html
    assert "none yet" in html


def test_form_publishes_the_payload(sample: ModuleType, pubsub_topic: TopicHandle) -> None:
    """POST / answers 200 "OK" and the payload is in the topic."""
    response = sample.app.test_client().post("/", data={"payload": "Test payload ✓"})
    assert (response.status_code, response.get_data(as_text=True)) == (200, "OK")
    [message] = pubsub_topic.pull(expected=1, timeout=10)
    assert message.data == "Test payload ✓".encode()


def test_form_without_a_payload_publishes_the_example_payload(sample: ModuleType, pubsub_topic: TopicHandle) -> None:
    """A POST without the field publishes "Example payload", as the samples do."""
    assert sample.app.test_client().post("/", data={}).status_code == 200
    assert [m.data for m in pubsub_topic.pull(expected=1, timeout=10)] == [b"Example payload"]


def test_publish_that_fails_is_503_not_ok(cloudclients_env: dict[str, str], port_env: pytest.MonkeyPatch,
                                          unique_name: Any) -> None:
    """A topic that does not exist: 503 naming the topic, quickly — the samples answer "OK" for a
    message that is never published."""
    missing = unique_name("missing-topic")
    port_env.setenv("PUBSUB_TOPIC", missing)
    with imported("appengine_pubsub") as module:
        started = time.monotonic()
        response = module.app.test_client().post("/", data={"payload": "lost?"})
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert missing in response.get_data(as_text=True)
    assert elapsed < 10, f"took {elapsed:.1f} s"


# -- /pubsub/push: the shared token -----------------------------------------------------


def test_push_with_the_token_shows_the_message(sample: ModuleType) -> None:
    """The samples' minimal envelope with the right token: 200 "OK", and the message is on the page."""
    response = push(sample, f"?token={TOKEN}", envelope(b"Test message"))
    assert (response.status_code, response.get_data(as_text=True)) == (200, "OK")
    assert "<li>Test message</li>" in page(sample)


@pytest.mark.parametrize("query", ["", "?token=", "?token=bad", f"?token={TOKEN}x", f"?token={TOKEN[:-1]}",
                                   f"?token={TOKEN.lower()}", f"?tok={TOKEN}"])
def test_push_without_the_right_token_is_refused_and_not_recorded(sample: ModuleType, query: str) -> None:
    """A valid envelope with a missing or wrong token: 400 "Invalid request", nothing recorded, the
    token not echoed."""
    response = push(sample, query, envelope(b"forged message"))
    assert (response.status_code, response.get_data(as_text=True)) == (400, "Invalid request")
    assert "forged message" not in page(sample)


def test_token_is_checked_before_the_body(sample: ModuleType) -> None:
    """A wrong token with garbage: the token answer, not an envelope error about a body nobody
    should have read."""
    response = push(sample, "?token=bad", b"\x00not json")
    assert (response.status_code, response.get_data(as_text=True)) == (400, "Invalid request")


def test_the_service_envelope_is_read(sample: ModuleType) -> None:
    """The full envelope Pub/Sub sends (ids, time, attributes, subscription) is accepted."""
    body = {
        "message": {"data": base64.b64encode(b"from the service").decode(), "attributes": {"k": "v"},
                    "messageId": "136969346945", "message_id": "136969346945",
                    "publishTime": "2024-05-01T12:00:00.123456789Z", "publish_time": "2024-05-01T12:00:00.123456789Z"},
        "subscription": f"projects/{TEST_PROJECT}/subscriptions/messages-push",
    }
    assert push(sample, f"?token={TOKEN}", body).status_code == 200
    assert "from the service" in page(sample)


def test_an_attribute_only_message_is_acknowledged(sample: ModuleType) -> None:
    """A message with attributes and no data: 200, shown as an empty entry."""
    response = push(sample, f"?token={TOKEN}", {"message": {"attributes": {"kind": "ping"}}})
    assert response.status_code == 200
    assert "<li></li>" in page(sample)


def test_malformed_envelope_with_the_token_is_one_400_listing_every_problem(sample: ModuleType) -> None:
    """Bad base64 and non-string attributes with the right token: one 400 naming both fields."""
    response = push(sample, f"?token={TOKEN}", {"message": {"data": "%%%", "attributes": {"n": 1}}})
    assert response.status_code == 400
    problems = response.get_json()["problems"]
    assert any("message.data" in p for p in problems) and any("message.attributes" in p for p in problems)


def test_messages_are_shown_as_text(sample: ModuleType) -> None:
    """Markup in a message is escaped on the page; bytes that are not UTF-8 are acknowledged (not a
    500 that Pub/Sub would retry forever) and shown with replacement characters."""
    assert push(sample, f"?token={TOKEN}", envelope(b"<script>alert(1)</script>")).status_code == 200
    assert push(sample, f"?token={TOKEN}", envelope(b"caf\xe9 \xff")).status_code == 200
    html = page(sample)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "caf\ufffd \ufffd" in html


def test_the_token_never_reaches_a_log_or_a_response(sample: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    """Right, wrong and malformed pushes: the shared token appears in no log record and no body."""
    with caplog.at_level(logging.DEBUG):
        bodies = [
            push(sample, f"?token={TOKEN}", envelope(b"ok")).get_data(as_text=True),
            push(sample, f"?token={TOKEN}", {"message": {"data": "%%%"}}).get_data(as_text=True),
            push(sample, f"?token={TOKEN}", b"").get_data(as_text=True),
            push(sample, f"?token={TOKEN}x", envelope(b"no")).get_data(as_text=True),
        ]
    assert caplog.records, "the refused pushes are logged"
    assert not [r for r in caplog.records if TOKEN in r.getMessage()]
    assert not [b for b in bodies if TOKEN in b]


def test_start_refuses_a_missing_or_blank_token(cloudclients_env: dict[str, str], port_env: pytest.MonkeyPatch
                                                ) -> None:
    """Without PUBSUB_VERIFICATION_TOKEN (or with only whitespace, which would make an empty
    ``?token=`` valid) the app does not start, and says which variable to set."""
    for value in (None, "", "  \n"):
        if value is None:
            port_env.delenv("PUBSUB_VERIFICATION_TOKEN")
        else:
            port_env.setenv("PUBSUB_VERIFICATION_TOKEN", value)
        with pytest.raises(RuntimeError, match="PUBSUB_VERIFICATION_TOKEN is not set"), imported("appengine_pubsub"):
            pass


# -- /push-handlers/receive_messages: shared token and OIDC ------------------------------


def test_authenticated_push_shows_the_message_and_the_claims_not_the_token(
    production: ModuleType, issuer: LocalIssuer
) -> None:
    """A valid OIDC token for the audience and the shared token: 200, the message and the token's
    claims on the page; the bearer token itself never (the sample prints it)."""
    token = issuer.token(AUDIENCE)
    response = push(production, f"?token={TOKEN}", envelope(b"signed message"), AUTH_PUSH,
                    Authorization=f"Bearer {token}")
    assert response.status_code == 200
    html = page(production)
    assert "signed message" in html
    assert f"email={SERVICE_ACCOUNT}" in html and f"aud={AUDIENCE}" in html
    assert token not in html and token.split(".")[2] not in html


@pytest.mark.parametrize(
    ("case", "status"),
    [("no bearer token", 401), ("not a JWT", 401), ("expired", 401), ("another audience", 403),
     ("another service account", 403), ("wrong shared token", 400)],
)
def test_authenticated_push_refusals(production: ModuleType, issuer: LocalIssuer, case: str, status: int) -> None:
    """Each way an authenticated push can be wrong, with its status; nothing is recorded."""
    now = int(time.time())
    bearer = {
        "no bearer token": None,
        "not a JWT": "not-a-token",
        "expired": issuer.token(AUDIENCE, iat=now - 7200, exp=now - 3600),
        "another audience": issuer.token("https://elsewhere.example.com/push"),
        "another service account": issuer.token(AUDIENCE, email="intruder@evil.iam.gserviceaccount.com"),
        "wrong shared token": issuer.token(AUDIENCE),
    }[case]
    query = "?token=bad" if case == "wrong shared token" else f"?token={TOKEN}"
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    response = push(production, query, envelope(b"should not show"), AUTH_PUSH, **headers)
    assert response.status_code == status
    assert "should not show" not in page(production)


def test_authenticated_route_takes_tokenless_pushes_from_the_emulator(sample: ModuleType) -> None:
    """Locally (a Pub/Sub emulator configured, which signs nothing) the same settings accept a push
    without a bearer token, as long as the shared token is right."""
    assert push(sample, f"?token={TOKEN}", envelope(b"local push"), AUTH_PUSH).status_code == 200
    assert push(sample, "?token=bad", envelope(b"local forged"), AUTH_PUSH).status_code == 400
    html = page(sample)
    assert "local push" in html and "local forged" not in html
    assert "Verified push token claims" not in html  # no token, no claims


# -- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
def test_form_to_push_round_trip_under_gunicorn(cloudclients_env: dict[str, str], pubsub_topic: TopicHandle) -> None:
    """gunicorn serves the port; a push subscription on the emulator delivers what the form
    published to ``/pubsub/push?token=…``, and the page shows it. A second subscription whose URL
    has a wrong token gets 400s: its message is never shown."""
    env = {**cloudclients_env, "PUBSUB_TOPIC": pubsub_topic.topic, "PUBSUB_VERIFICATION_TOKEN": TOKEN}
    subscriber = pubsub_topic.registry.subscriber
    with gunicorn("appengine_pubsub", env, "-w", "1", "--threads", "4") as server:
        names = []
        for suffix, token in (("good", TOKEN), ("bad", "not-the-token")):
            name = f"{pubsub_topic.subscription}-{suffix}"
            endpoint = f"{server.url}{PUSH}?{urllib.parse.urlencode({'token': token})}"
            subscriber.create_subscription(request={"name": name, "topic": pubsub_topic.topic,
                                                    "push_config": {"push_endpoint": endpoint}})
            names.append(name)
        try:
            form = urllib.parse.urlencode({"payload": "through the emulator"}).encode()
            with urllib.request.urlopen(f"{server.url}/", data=form, timeout=15) as response:
                assert response.status == 200

            def page() -> str:
                with urllib.request.urlopen(f"{server.url}/", timeout=5) as response:
                    return str(response.read().decode())

            wait_for(lambda: "through the emulator" in page(), 15, interval=0.1)
            assert "<li>through the emulator</li>" in page(), server.log()
            time.sleep(1.0)  # the wrong-token subscription's pushes were answered by now
            html = page()
            assert html.count("<li>through the emulator</li>") == 1, "accepted through the wrong token"
            assert TOKEN not in server.log()
        finally:
            for name in names:
                with contextlib.suppress(Exception):
                    subscriber.delete_subscription(subscription=name, timeout=5)
