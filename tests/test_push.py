"""Push endpoint: the JSON envelope becomes a typed message, malformed bodies get a 400 that
names the field, 2xx acks and an exception nacks — and, end to end, an emulator push
subscription delivers to the app served by a real gunicorn."""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cloudclients import ClientRegistry, CloudClients, ReceivedMessage, push_endpoint
from cloudclients.testing import TEST_PROJECT, pull_messages
from tests.helpers import wait_for
from tests.oidc import LocalIssuer
from tests.servers import gunicorn

SUB = "projects/cloudclients-test/subscriptions/orders-push"
SECRET_DATA = b"payload-that-must-not-be-echoed"


def envelope(**message: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": {"data": base64.b64encode(b"hello").decode(), "messageId": "101",
                    "publishTime": "2024-05-01T12:00:00.123456789Z", **message},
        "subscription": SUB,
    }
    return body


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.config.update({"CLOUDCLIENTS_PROJECT": TEST_PROJECT, "CLOUDCLIENTS_PUBSUB_EMULATOR_HOST": "127.0.0.1:1",
                       "CLOUDCLIENTS_PUSH_ALLOW_UNAUTHENTICATED": True, "CLOUDCLIENTS_EXIT_HANDLERS": False})
    CloudClients(app)
    app.extensions["received"] = []

    @app.post("/push")
    @push_endpoint
    def push(message: ReceivedMessage) -> Any:
        app.extensions["received"].append(message)
        if message.attributes.get("fail"):
            raise RuntimeError("handler failed")
        if message.attributes.get("reply"):
            return {"seen": message.message_id}, 202
        return None

    return app


def test_envelope_becomes_a_typed_message(app: Flask) -> None:
    """Every envelope field reaches the view typed: bytes, read-only attributes, UTC publish time
    (nanoseconds cut to microseconds), ordering key, delivery attempt, subscription; None → 204."""
    body = envelope(data=base64.b64encode(b'{"id": 7}').decode(), attributes={"kind": "created"},
                    orderingKey="customer-1")
    body["deliveryAttempt"] = 3
    response = app.test_client().post("/push", json=body)
    assert response.status_code == 204
    [message] = app.extensions["received"]
    assert message.data == b'{"id": 7}' and message.json() == {"id": 7}
    assert dict(message.attributes) == {"kind": "created"}
    with pytest.raises(TypeError):
        message.attributes["kind"] = "changed"  # type: ignore[index]
    assert message.message_id == "101"
    assert message.publish_time == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert (message.ordering_key, message.delivery_attempt, message.subscription) == ("customer-1", 3, SUB)
    assert "hello" not in repr(message) and "101" in repr(message)


def test_snake_case_fields_and_attribute_only_messages(app: Flask) -> None:
    """The snake_case aliases the service also sends are read, and a message without data has b''."""
    body = {"message": {"message_id": "9", "publish_time": "2024-05-01T12:00:00Z", "attributes": {"a": "1"}},
            "subscription": SUB}
    assert app.test_client().post("/push", json=body).status_code == 204
    [message] = app.extensions["received"]
    assert (message.data, message.message_id, message.delivery_attempt) == (b"", "9", None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json at all", "not a JSON object"),
        ([1, 2, 3], "not a JSON object"),
        ({"subscription": SUB}, "'message'"),
        ({"message": {"messageId": "1", "publishTime": "2024-05-01T12:00:00Z"}}, "'subscription'"),
        (envelope(data="%%%" + SECRET_DATA.decode()), "'message.data'"),
        (envelope(data=12), "'message.data'"),
        (envelope(attributes={"n": 1}), "'message.attributes'"),
        (envelope(attributes=["x"]), "'message.attributes'"),
        (envelope(messageId=""), "'message.messageId'"),
        (envelope(publishTime="yesterday"), "'message.publishTime'"),
        (envelope(publishTime="2024-05-01T12:00:00"), "'message.publishTime'"),
        (envelope(orderingKey=5), "'message.orderingKey'"),
        ({**envelope(), "deliveryAttempt": -1}, "'deliveryAttempt'"),
        ({**envelope(), "deliveryAttempt": "2"}, "'deliveryAttempt'"),
    ],
    ids=["text", "array", "no-message", "no-subscription", "data-not-base64", "data-not-string",
         "attribute-not-string", "attributes-not-object", "no-message-id", "bad-publish-time",
         "naive-publish-time", "ordering-key-not-string", "negative-attempt", "attempt-not-int"],
)
def test_malformed_envelope_is_400_naming_the_field(app: Flask, body: Any, field: str) -> None:
    """A body that is not a push envelope → 400 with a JSON body naming the field; the view never
    runs and the body's data is not echoed."""
    client = app.test_client()
    if isinstance(body, bytes):
        response = client.post("/push", data=body, content_type="application/json")
    else:
        response = client.post("/push", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"] == "malformed push envelope"
    assert field in response.get_json()["detail"]
    assert SECRET_DATA.decode() not in response.get_data(as_text=True)
    assert app.extensions["received"] == []


def test_exception_in_the_view_is_500_and_a_reply_passes_through(app: Flask) -> None:
    """A view that raises answers 500 (the service nacks and redelivers); a view's own response is kept."""
    client = app.test_client()
    assert client.post("/push", json=envelope(attributes={"fail": "1"})).status_code == 500
    response = client.post("/push", json=envelope(attributes={"reply": "1"}))
    assert (response.status_code, response.get_json()) == (202, {"seen": "101"})


def test_unconfigured_authentication_refuses_every_push(caplog: pytest.LogCaptureFixture) -> None:
    """Without an audience and without the emulator allowance, a push is refused with 500 and the
    log says which setting to add (messages stay in the subscription until the app is fixed)."""
    app = Flask(__name__)
    app.config.update({"CLOUDCLIENTS_PROJECT": TEST_PROJECT, "CLOUDCLIENTS_EXIT_HANDLERS": False})
    CloudClients(app)
    calls: list[ReceivedMessage] = []
    app.post("/push")(push_endpoint(calls.append))
    with caplog.at_level(logging.ERROR, logger="cloudclients"):
        response = app.test_client().post("/push", json=envelope())
    assert response.status_code == 500
    assert "CLOUDCLIENTS_PUSH_AUDIENCE" in response.get_json()["detail"]
    assert any("CLOUDCLIENTS_PUSH_AUDIENCE" in r.getMessage() for r in caplog.records)
    assert calls == []


# -- end to end: emulator push subscription → gunicorn -------------------------------------


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]



@pytest.fixture
def push_subscription(
    emulator_registry: ClientRegistry, unique_name: Callable[[str], str]
) -> Iterator[Callable[[str], tuple[str, str]]]:
    """Creates a topic and a push subscription to a given endpoint; deletes them afterwards."""
    created: list[tuple[str, str]] = []

    def make(endpoint: str) -> tuple[str, str]:
        topic = f"projects/{TEST_PROJECT}/topics/{unique_name('push')}"
        sub = f"projects/{TEST_PROJECT}/subscriptions/{unique_name('push-sub')}"
        emulator_registry.publisher.create_topic(name=topic)
        emulator_registry.subscriber.create_subscription(
            request={"name": sub, "topic": topic, "ack_deadline_seconds": 10,
                     "push_config": {"push_endpoint": endpoint}}
        )
        created.append((topic, sub))
        return topic, sub

    yield make
    for topic, sub in created:
        try:
            emulator_registry.subscriber.delete_subscription(subscription=sub, timeout=5)
            emulator_registry.publisher.delete_topic(topic=topic, timeout=5)
        except Exception:  # best effort: the emulator may be gone
            pass


@pytest.mark.slow
def test_emulator_push_reaches_app_served_by_gunicorn(
    cloudclients_env: dict[str, str], emulator_registry: ClientRegistry,
    push_subscription: Callable[[str], tuple[str, str]], tmp_path: Path,
) -> None:
    """The emulator POSTs 30 messages to gunicorn (2 workers): each is handled with its data,
    attributes, ID and subscription; a 2xx acks it (no redelivery), and the one whose first
    delivery fails (500) is delivered again and then handled."""
    record = tmp_path / "pushes.jsonl"
    env = {**cloudclients_env, "CLOUDCLIENTS_PUSH_ALLOW_UNAUTHENTICATED": "true", "CC_PUSH_RECORD": str(record)}
    with gunicorn(["-w", "2", "--threads", "4"], env, app="tests.apps.push_app:app") as server:
        topic, sub = push_subscription(f"{server.url}/push")
        publisher = emulator_registry.publisher
        started = time.monotonic()
        ids = {publisher.publish(topic, f"m{i}".encode(), n=str(i)).result(timeout=15): f"m{i}" for i in range(29)}
        failing = publisher.publish(topic, b"flaky", fail="once").result(timeout=15)
        ids[failing] = "flaky"

        def handled() -> set[str]:
            return {r["id"] for r in read_records(record) if "id" in r}

        assert wait_for(lambda: handled() >= set(ids), 60), f"missing: {set(ids) - handled()}\n{server.log()}"
        elapsed = time.monotonic() - started
        time.sleep(2.0)  # long enough for a (wrong) redelivery of an acked message to show up
        records = read_records(record)

    done = [r for r in records if "id" in r]
    print(f"\npush e2e: {len(ids)} messages handled in {elapsed:.2f} s by pids {sorted({r['pid'] for r in done})}")
    assert sorted(r["id"] for r in done) == sorted(ids), "an acked (204) message was delivered again"
    for r in done:
        assert r["data"] == ids[r["id"]]
        assert r["subscription"] == sub
        assert datetime.fromisoformat(r["publish_time"]).tzinfo is not None
        if r["data"] != "flaky":
            assert r["attributes"] == {"n": r["data"][1:]}
    assert [r["failed"] for r in records if "failed" in r] == [failing]


@pytest.mark.slow
def test_verifying_app_refuses_tokenless_pushes_and_accepts_signed_ones(
    cloudclients_env: dict[str, str], emulator_registry: ClientRegistry,
    push_subscription: Callable[[str], tuple[str, str]], tmp_path: Path,
) -> None:
    """With an audience configured, gunicorn answers the emulator's tokenless pushes 401, so the
    message stays in the subscription (pulled back after switching it to pull), while a push
    carrying a locally signed token is accepted — certificates fetched by the worker from loopback."""
    record = tmp_path / "pushes.jsonl"
    issuer = LocalIssuer()
    audience = "https://orders.example.com/push"
    env = {**cloudclients_env, "CC_PUSH_RECORD": str(record), "CLOUDCLIENTS_PUSH_AUDIENCE": audience,
           "CLOUDCLIENTS_PUSH_CERTS_URL": issuer.certs_url}
    try:
        with gunicorn(["-w", "1", "--threads", "4"], env, app="tests.apps.push_app:app") as server:
            topic, sub = push_subscription(f"{server.url}/push")
            message_id = emulator_registry.publisher.publish(topic, b"unsigned").result(timeout=15)
            time.sleep(3.0)  # several push attempts (backoff from 100 ms), each answered 401
            assert read_records(record) == []

            body = json.dumps(envelope()).encode()
            for token, status in [(None, 401), ("x.y.z", 401), (issuer.token(audience), 204)]:
                headers = {"Content-Type": "application/json"}
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                request = urllib.request.Request(f"{server.url}/push", data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        got = response.status
                except urllib.error.HTTPError as exc:
                    got = exc.code
                assert got == status, (token, server.log())
            emulator_registry.subscriber.modify_push_config(request={"subscription": sub, "push_config": {}})
        assert [r["id"] for r in read_records(record)] == ["101"]
        assert issuer.requests == 1
        pulled = pull_messages(emulator_registry, sub, expected=1, timeout=30)
        assert [m.message_id for m in pulled] == [message_id]
    finally:
        issuer.stop()
