"""Push bodies: every shape the service sends and the minimal ones hand-made requests use become a
typed message; one 400 lists every malformed field; bodies beyond the service's limits get 413;
nothing the body carries is echoed; unwrapped pushes (payload unwrapping) are read from the raw
body and headers."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudclients_emulator.oidc import TokenSigner
from cloudclients_emulator.push import request_for
from cloudclients_emulator.state import pb
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
    assert dict(message.attributes) == {"kind": "order"}


def test_unwrapped_attributes_are_the_headers_the_service_wrote_lowercased(app: Flask) -> None:
    """The emulator's own unwrapped request (attributes as headers, x-goog-pubsub-* metadata), as it
    reaches an app behind App Engine, Cloud Run or a load balancer: attribute names arrive lowercased
    (HTTP names are case-insensitive), and the headers of the platform, proxies, browsers and HTTP
    itself are not attributes (X-AppEngine-Country, X-Real-IP, Origin, Accept-Language ... were)."""
    message = pb.PubsubMessage(data=b"raw", message_id="7", attributes={"Kind": "order", "event-type": "created"})
    message.publish_time.FromSeconds(1_700_000_000)
    config = pb.Subscription(push_config={"push_endpoint": "http://127.0.0.1:1/push",
                                          "no_wrapper": {"write_metadata": True}}).push_config
    body, service_headers = request_for(SUB, message, None, config, TokenSigner())
    platform_headers = {
        "X-AppEngine-Country": "ZZ", "X-AppEngine-Https": "on", "X-Cloud-Trace-Context": "abc/1;o=1",
        "traceparent": "00-abc-01", "X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https", "X-Real-IP": "1.2.3.4",
        "X-Request-Id": "r-1", "Forwarded": "for=1.2.3.4", "Via": "1.1 google", "Origin": "https://evil.example",
        "Cookie": "session=1", "Accept": "*/*", "Accept-Language": "en", "Accept-Encoding": "gzip",
        "Content-Encoding": "identity", "Authorization": "Bearer x", "X-Goog-Iap-Jwt-Assertion": "jwt",
        "X-Goog-Pubsub-Something-New": "1", "Sec-Fetch-Mode": "cors", "Referer": "https://x.example",
    }
    response = app.test_client().post("/push", data=body, headers=[*service_headers, *platform_headers.items()])
    assert response.status_code == 204, response.get_data(as_text=True)
    [received_message] = received(app)
    assert dict(received_message.attributes) == {"kind": "order", "event-type": "created"}
    assert (received_message.message_id, received_message.subscription) == ("7", SUB)


def test_an_unwrapped_push_without_metadata_needs_the_flag(app: Flask) -> None:
    """Without write_metadata nothing marks the request: unwrapped=True reads the raw body, and a plain
    endpoint answers 400 saying to pass it."""
    client = app.test_client()
    assert client.post("/raw", data=b"raw bytes \x00\xff", content_type="application/octet-stream").status_code == 204
    assert received(app)[0].data == b"raw bytes \x00\xff"
    response = client.post("/push", data=b"raw bytes", content_type="application/octet-stream")
    assert response.status_code == 400
    assert "unwrapped=True" in response.get_json()["detail"]


# -- bodies the service never sends: always a 400 that says what is wrong ---------------------


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_publish_time_out_of_range_is_400_not_500(app: Flask, when: str) -> None:
    """A publishTime that is a valid timestamp but falls outside year 1-9999 in UTC (it used to
    raise OverflowError: 500, retried forever) → 400 naming the field, wrapped and unwrapped."""
    client = app.test_client()
    response = client.post("/push", json=envelope(publishTime=when))
    assert response.status_code == 400
    assert response.get_json()["problems"] == ["'message.publishTime' is out of range (before year 1 or after "
                                               "year 9999 in UTC)"]
    unwrapped = client.post("/push", data=b"x", headers={"x-goog-pubsub-message-id": "1",
                                                          "x-goog-pubsub-publish-time": when})
    assert unwrapped.status_code == 400 and "'x-goog-pubsub-publish-time' is out of range" in unwrapped.get_json()[
        "detail"]
    assert received(app) == []


def test_every_problem_is_listed_even_without_a_message(app: Flask) -> None:
    """No 'message' and two other malformed fields: one 400 naming all three (it named only the
    missing message)."""
    response = app.test_client().post("/push", json={"subscription": 5, "deliveryAttempt": "x"})
    problems = response.get_json()["problems"]
    assert response.status_code == 400 and len(problems) == 3, problems
    assert [p.split(" ")[0] for p in problems] == ["'message'", "'subscription'", "'deliveryAttempt'"]


def test_a_huge_integer_is_reported_as_such_not_as_not_json(app: Flask) -> None:
    """A deliveryAttempt of 5,000 digits is valid JSON: the 400 says the attempt is not an integer in
    range (Python's int limit used to make it "not JSON … pass unwrapped=True")."""
    body = b'{"message": {"data": "aGk="}, "deliveryAttempt": ' + b"9" * 5000 + b"}"
    response = app.test_client().post("/push", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["problems"] == ["'deliveryAttempt' is not an integer in range (0 to 2147483647)"]
    big = app.test_client().post("/push", json={**envelope(), "deliveryAttempt": 2**40})
    assert "not an integer in range" in big.get_json()["detail"]


def test_a_body_that_is_not_utf8_says_so(app: Flask) -> None:
    """Bytes that are not UTF-8 (a push envelope is UTF-8 JSON) → 400 saying "not UTF-8", with the
    unwrapping hint (raw binary data is what an unwrapped push carries)."""
    response = app.test_client().post("/push", data=b'\xff\xfe{"message": {}}', content_type="application/json")
    detail = response.get_json()["detail"]
    assert response.status_code == 400 and "not UTF-8" in detail and "disable payload unwrapping" in detail


def test_json_without_a_message_suggests_disabling_payload_unwrapping(app: Flask) -> None:
    """An unwrapped JSON payload ({"order": 7}) reaching a wrapped endpoint: the 400 says to disable
    payload unwrapping on the subscription or pass unwrapped=True (it only said 'message' was missing)."""
    response = app.test_client().post("/push", data=b'{"order": 7}', content_type="application/json")
    detail = response.get_json()["detail"]
    assert response.status_code == 400
    assert "disable payload unwrapping on the subscription, or pass unwrapped=True" in detail


def test_a_parser_surprise_is_a_400_naming_the_field(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception no field parser expects (here injected into base64 decoding: no real body makes
    the standard library raise outside its documented errors) → 400 naming the field, never a 500;
    logged at WARNING with its traceback."""
    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise OverflowError("injected")

    monkeypatch.setattr(base64, "b64decode", broken)
    with caplog.at_level(logging.WARNING, logger="cloudclients"):
        response = app.test_client().post("/push", json=envelope())
    assert response.status_code == 400
    assert response.get_json()["problems"] == ["'message.data' could not be read (OverflowError)"]
    [record] = [r for r in caplog.records if "refused (400)" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.exc_info is not None
    assert received(app) == []


def test_any_surprise_reading_the_body_is_a_400(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last safety net: an unexpected exception anywhere in reading the body (injected into the
    JSON decoder) is a 400, never a 500."""
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OverflowError("injected")

    monkeypatch.setattr(json, "loads", broken)
    response = app.test_client().post("/push", data=b'{"message": {"data": "aGk="}}', content_type="application/json")
    assert response.status_code == 400
    assert "could not be read as a push message (OverflowError)" in response.get_data(as_text=True)


def test_garbage_posted_again_and_again_is_logged_once_not_per_request(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """50 malformed bodies in a row (anyone can POST to a public URL): 50 answers of 400, one
    WARNING line (rate-limited per endpoint and kind), not 50."""
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="cloudclients"):
        statuses = {client.post("/push", data=b"garbage", content_type="text/plain").status_code for _ in range(50)}
    assert statuses == {400}
    assert len([r for r in caplog.records if "refused (400)" in r.getMessage()]) == 1
