"""Push bodies: every shape the service sends and the minimal ones hand-made requests use become a
typed message; one 400 lists every malformed field; bodies beyond the service's limits get 413;
nothing the body carries is echoed; unwrapped pushes (payload unwrapping) are read from the raw
body and headers."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask

from cloudclients import CloudClients, ReceivedMessage, push_endpoint
from cloudclients.testing import TEST_PROJECT

SUB = "projects/cloudclients-test/subscriptions/orders-push"
SECRET_DATA = b"payload-that-must-not-be-echoed"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def envelope(**message: Any) -> dict[str, Any]:
    return {
        "message": {"data": b64(b"hello"), "messageId": "101", "publishTime": "2024-05-01T12:00:00.123456789Z",
                    **message},
        "subscription": SUB,
    }


@pytest.fixture
def app() -> Flask:
    """An app accepting unauthenticated pushes (emulator mode) that records each message."""
    app = Flask(__name__)
    app.config.update({"CLOUDCLIENTS_PROJECT": TEST_PROJECT, "CLOUDCLIENTS_PUBSUB_EMULATOR_HOST": "127.0.0.1:1",
                       "CLOUDCLIENTS_PUSH_AUTH": "unauthenticated", "CLOUDCLIENTS_EXIT_HANDLERS": False})
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

    @app.post("/raw")
    @push_endpoint(unwrapped=True)
    def raw(message: ReceivedMessage) -> None:
        app.extensions["received"].append(message)

    return app


def received(app: Flask) -> list[ReceivedMessage]:
    return list(app.extensions["received"])


def test_the_services_envelope_becomes_a_typed_message(app: Flask) -> None:
    """Every field the service sends reaches the view typed: bytes, read-only attributes, UTC publish
    time (nanoseconds cut to microseconds), ordering key, delivery attempt, subscription; None → 204."""
    body = envelope(data=b64(b'{"id": 7}'), attributes={"kind": "created"}, orderingKey="customer-1",
                    message_id="101", publish_time="2024-05-01T12:00:00.123456789Z")
    body["deliveryAttempt"] = 3
    response = app.test_client().post("/push", json=body)
    assert response.status_code == 204
    [message] = received(app)
    assert message.data == b'{"id": 7}' and message.json() == {"id": 7}
    assert dict(message.attributes) == {"kind": "created"}
    with pytest.raises(TypeError):
        message.attributes["kind"] = "changed"  # type: ignore[index]
    assert message.message_id == "101"
    assert message.publish_time == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert (message.ordering_key, message.delivery_attempt, message.subscription) == ("customer-1", 3, SUB)
    assert dict(message.claims) == {}
    assert "hello" not in repr(message) and "101" in repr(message)


def test_snake_case_aliases_are_read(app: Flask) -> None:
    """The snake_case aliases the service also sends are read on their own."""
    body = {"message": {"message_id": "9", "publish_time": "2024-05-01T12:00:00Z", "attributes": {"a": "1"}},
            "subscription": SUB, "delivery_attempt": 2}
    assert app.test_client().post("/push", json=body).status_code == 204
    [message] = received(app)
    assert (message.data, message.message_id, message.delivery_attempt) == (b"", "9", 2)


@pytest.mark.parametrize(
    "body",
    [
        {"message": {"data": b64(b"hi")}},
        {"message": {"attributes": {"kind": "ping"}}},
        {"message": {"data": b64(b"hi"), "attributes": {}}, "subscription": SUB},
        {"message": {"data": b64(b"hi"), "attributes": None, "messageId": None}},
    ],
    ids=["data-only", "attributes-only", "no-ids", "nulls"],
)
def test_minimal_shapes_from_samples_and_curl_are_accepted(app: Flask, body: dict[str, Any]) -> None:
    """Only 'message' (with data and/or attributes) is required, as Google's samples and their curl
    instructions send it: missing ids, time and subscription become empty values."""
    assert app.test_client().post("/push", json=body).status_code == 204
    [message] = received(app)
    assert message.message_id == "" and message.publish_time is None
    assert message.subscription == body.get("subscription", "")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json at all", "not JSON"),
        ([1, 2, 3], "not a JSON object"),
        ({"subscription": SUB}, "'message'"),
        ({"message": {}}, "neither 'data' nor 'attributes'"),
        (envelope(data="%%%" + SECRET_DATA.decode()), "'message.data'"),
        (envelope(data=12), "'message.data'"),
        (envelope(attributes={"n": 1}), "'message.attributes'"),
        (envelope(attributes=["x"]), "'message.attributes'"),
        (envelope(attributes=[]), "'message.attributes'"),
        (envelope(attributes=""), "'message.attributes'"),
        (envelope(attributes=0), "'message.attributes'"),
        (envelope(messageId=7), "'message.messageId'"),
        (envelope(publishTime="yesterday"), "'message.publishTime'"),
        (envelope(publishTime="2024-05-01T12:00:00"), "'message.publishTime'"),
        (envelope(orderingKey=5), "'message.orderingKey'"),
        ({**envelope(), "subscription": ["s"]}, "'subscription'"),
        ({**envelope(), "deliveryAttempt": -1}, "'deliveryAttempt'"),
        ({**envelope(), "deliveryAttempt": "2"}, "'deliveryAttempt'"),
        (b"", "empty"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
    ids=["text", "array", "no-message", "empty-message", "data-not-base64", "data-not-string",
         "attribute-not-string", "attributes-list", "attributes-empty-list", "attributes-empty-string",
         "attributes-zero", "message-id-not-string", "bad-publish-time", "naive-publish-time",
         "ordering-key-not-string", "subscription-not-string", "negative-attempt", "attempt-not-int", "empty",
         "deeply-nested"],
)
def test_a_malformed_body_is_400_naming_the_field(app: Flask, body: Any, field: str) -> None:
    """A body that is not a push message → 400 with a JSON body naming the field (never a 500);
    the view never runs and the body's data is not echoed."""
    client = app.test_client()
    if isinstance(body, bytes):
        response = client.post("/push", data=body, content_type="application/json")
    else:
        response = client.post("/push", json=body)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.get_json()["error"] == "malformed push envelope"
    assert field in response.get_json()["detail"]
    assert SECRET_DATA.decode() not in response.get_data(as_text=True)
    assert received(app) == []


def test_one_400_lists_every_malformed_field(app: Flask) -> None:
    """Three malformed fields → one 400 naming all three (not one per round trip)."""
    body = {**envelope(data=12, attributes=[], publishTime="soon"), "deliveryAttempt": -2}
    response = app.test_client().post("/push", json=body)
    assert response.status_code == 400
    problems = response.get_json()["problems"]
    assert len(problems) == 4
    for field in ("'message.data'", "'message.attributes'", "'message.publishTime'", "'deliveryAttempt'"):
        assert any(field in p for p in problems), problems


def test_the_largest_legal_push_is_accepted_and_anything_bigger_is_413(app: Flask) -> None:
    """A 10 MB message (the service's limit; 13.3 MB once base64-encoded) is handled; a body
    beyond what the service can send is refused with 413 before it is parsed."""
    big = b"x" * 10_000_000
    client = app.test_client()
    assert client.post("/push", json=envelope(data=b64(big))).status_code == 204
    assert len(received(app)[0].data) == 10_000_000
    too_big = json.dumps(envelope(data=b64(b"x" * 12_000_000))).encode()
    response = client.post("/push", data=too_big, content_type="application/json")
    assert response.status_code == 413
    assert len(received(app)) == 1


def test_exception_in_the_view_is_500_and_a_reply_passes_through(app: Flask) -> None:
    """A view that raises answers 500 (the service nacks and redelivers); a view's own response is kept."""
    client = app.test_client()
    assert client.post("/push", json=envelope(attributes={"fail": "1"})).status_code == 500
    response = client.post("/push", json=envelope(attributes={"reply": "1"}))
    assert (response.status_code, response.get_json()) == (202, {"seen": "101"})


# -- payload unwrapping (no_wrapper) ----------------------------------------------------------


def test_an_unwrapped_push_with_metadata_is_recognised_by_its_headers(app: Flask) -> None:
    """With write_metadata the body is the raw data, the x-goog-pubsub-* headers carry the metadata
    and every other non-transport header is an attribute — on a plain @push_endpoint."""
    headers = {
        "x-goog-pubsub-subscription-name": SUB,
        "x-goog-pubsub-message-id": "2070443601311540",
        "x-goog-pubsub-publish-time": "2021-02-26T19:13:55.749Z",
        "x-goog-pubsub-ordering-key": "some-key",
        "kind": "order",
        "User-Agent": "APIs-Google",
    }
    response = app.test_client().post("/push", data=b'{"status": "Hello there"}', headers=headers,
                                      content_type="application/json")
    assert response.status_code == 204, response.get_data(as_text=True)
    [message] = received(app)
    assert message.data == b'{"status": "Hello there"}'
    assert (message.message_id, message.ordering_key, message.subscription) == ("2070443601311540", "some-key", SUB)
    assert message.publish_time == datetime(2021, 2, 26, 19, 13, 55, 749000, tzinfo=UTC)
    assert dict(message.attributes) == {"Kind": "order"}


def test_an_unwrapped_push_without_metadata_needs_the_flag(app: Flask) -> None:
    """Without write_metadata nothing marks the request: unwrapped=True reads the raw body, and a plain
    endpoint answers 400 saying to pass it."""
    client = app.test_client()
    assert client.post("/raw", data=b"raw bytes \x00\xff", content_type="application/octet-stream").status_code == 204
    assert received(app)[0].data == b"raw bytes \x00\xff"
    response = client.post("/push", data=b"raw bytes", content_type="application/octet-stream")
    assert response.status_code == 400
    assert "unwrapped=True" in response.get_json()["detail"]
