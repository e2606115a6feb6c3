"""The port of Google's Cloud Run Pub/Sub service (examples/samples/run_pubsub): it starts with no
configuration at all (Cloud Run sets no project), greets every push it can read — minimal, full,
attribute-only, unwrapped — answers one 400 to anything that is not a push, and never a 500 for
content Pub/Sub would then retry forever."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from cloudclients import ClientRegistry
from cloudclients.testing import TopicHandle
from tests.helpers import wait_for
from tests.oidc import LocalIssuer
from tests.sample_ports import gunicorn, imported

AUDIENCE = "https://pubsub-tutorial-abc123-uc.a.run.app/"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def no_configuration(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Cloud Run's environment as far as this service cares: no project, no emulator, and a metadata
    server that nothing may ask (pointed at a closed loopback port)."""
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    monkeypatch.setenv("FLASK_CLOUDCLIENTS_EXIT_HANDLERS", "false")
    return monkeypatch


@pytest.fixture
def service(no_configuration: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    with imported("run_pubsub") as module:
        yield module


def post(module: ModuleType, body: Any, **headers: str) -> Any:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return module.app.test_client().post("/", data=data, headers={"Content-Type": "application/json", **headers})


def test_starts_and_serves_without_any_configuration(service: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """No GOOGLE_CLOUD_PROJECT, no emulator, no credentials: the module imports and a push is
    greeted — the service builds no client, so it needs no project."""
    name = str(uuid.uuid4())
    response = post(service, {"message": {"data": b64(name.encode())}})
    assert (response.status_code, response.get_data()) == (204, b"")
    assert f"Hello {name}!\n" in capsys.readouterr().out


def test_platform_authentication_is_announced_once(no_configuration: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The port trusts Cloud Run's invoker IAM (PUSH_AUTH=platform); cloudclients says so once, at
    WARNING, when the app is set up — not per push."""
    with caplog.at_level(logging.WARNING, logger="cloudclients"), imported("run_pubsub") as module:
        for _ in range(3):
            assert post(module, {"message": {"data": b64(b"x")}}).status_code == 204
    platform = [r for r in caplog.records if "platform" in r.getMessage()]
    assert len(platform) == 1 and platform[0].levelno == logging.WARNING


@pytest.mark.parametrize(
    ("data", "greeting"),
    [(b"Cloud Run", "Hello Cloud Run!"), (b"  padded\n", "Hello padded!"), ("Zoë 🌍".encode(), "Hello Zoë 🌍!"),
     (b"", "Hello World!"), (b"caf\xe9", "Hello caf\ufffd!")],
)
def test_minimal_envelopes_are_greeted(service: ModuleType, capsys: pytest.CaptureFixture[str], data: bytes,
                                       greeting: str) -> None:
    """``{"message": {"data": …}}``: the data, stripped; World for empty data; bytes that are not
    UTF-8 with replacement characters instead of a 500."""
    assert post(service, {"message": {"data": b64(data)}}).status_code == 204
    assert capsys.readouterr().out == greeting + "\n"


def test_an_attribute_only_message_greets_the_world(service: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """A message without data (attributes only) is a valid push: Hello World!"""
    assert post(service, {"message": {"attributes": {"origin": "scheduler"}}}).status_code == 204
    assert capsys.readouterr().out == "Hello World!\n"


def test_the_service_envelope_is_greeted(service: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """What Pub/Sub really sends (camelCase and snake_case ids, time, subscription, delivery attempt)."""
    body = {
        "message": {"data": b64(b"service"), "messageId": "42", "message_id": "42",
                    "publishTime": "2024-05-01T12:00:00Z", "publish_time": "2024-05-01T12:00:00Z",
                    "attributes": {"a": "b"}, "orderingKey": "k"},
        "subscription": "projects/p-123456/subscriptions/myRunSubscription",
        "deliveryAttempt": 3,
    }
    assert post(service, body).status_code == 204
    assert capsys.readouterr().out == "Hello service!\n"


def test_an_unwrapped_push_is_greeted(service: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """A subscription with payload unwrapping and metadata: the raw body is the data."""
    response = service.app.test_client().post("/", data=b"unwrapped", headers={
        "x-goog-pubsub-message-id": "7", "x-goog-pubsub-subscription-name": "projects/p/subscriptions/s",
        "x-goog-pubsub-publish-time": "2024-05-01T12:00:00Z", "Content-Type": "application/octet-stream"})
    assert response.status_code == 204
    assert capsys.readouterr().out == "Hello unwrapped!\n"


@pytest.mark.parametrize(
    "body",
    [b"", b'""', json.dumps("{ message: true }"), json.dumps({"nomessage": "invalid"}), b"{not json",
     json.dumps({"message": {"data": "***"}}), json.dumps({"message": {"attributes": ["a"]}}),
     b"[" * 100_000 + b"]" * 100_000, json.dumps([{"message": {"data": b64(b"x")}}])],
    ids=["empty", "empty-string", "json-string", "no-message", "not-json", "bad-base64", "bad-attributes",
         "deeply-nested", "list"],
)
def test_what_is_not_a_push_is_a_400(service: ModuleType, capsys: pytest.CaptureFixture[str], body: Any) -> None:
    """Each body that is not a push message: 400 with a JSON reason, nothing greeted, never a 500."""
    response = post(service, body)
    assert response.status_code == 400
    assert response.get_json()["problems"]
    assert capsys.readouterr().out == ""


def test_a_public_service_verifies_tokens_instead(no_configuration: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Deployed publicly, the documented environment switches to OIDC: a push without a token is 401,
    one with a valid token is greeted."""
    issuer = LocalIssuer()
    try:
        no_configuration.setenv("FLASK_CLOUDCLIENTS_PUSH_AUTH", "oidc")
        no_configuration.setenv("FLASK_CLOUDCLIENTS_PUSH_AUDIENCE", AUDIENCE)
        no_configuration.setenv("FLASK_CLOUDCLIENTS_PUSH_CERTS_URL", issuer.certs_url)
        with imported("run_pubsub") as module:
            body = {"message": {"data": b64(b"verified")}}
            assert post(module, body).status_code == 401
            other = issuer.token("https://other.example/")
            assert post(module, body, Authorization=f"Bearer {other}").status_code == 403
            assert post(module, body, Authorization=f"Bearer {issuer.token(AUDIENCE)}").status_code == 204
    finally:
        issuer.stop()
    assert capsys.readouterr().out == "Hello verified!\n"


@pytest.mark.slow
def test_pushes_from_a_subscription_are_greeted_under_gunicorn(
    cloudclients_env: dict[str, str], pubsub_topic: TopicHandle, emulator_registry: ClientRegistry
) -> None:
    """gunicorn (2 workers x 4 threads, access log on the same stdout, unbuffered as on Cloud Run)
    serves the port; an emulator push subscription delivers 100 published messages to ``/``: each
    is greeted on a line of its own in the service's log, and acknowledged (none comes back)."""
    names = [f"name-{i}-{uuid.uuid4().hex[:6]}" for i in range(100)]
    subscription = f"{pubsub_topic.subscription}-push"
    args = ("-w", "2", "--threads", "4", "--access-logfile", "-")
    with gunicorn("run_pubsub", {"GCE_METADATA_HOST": "127.0.0.1:9"}, *args) as server:
        emulator_registry.subscriber.create_subscription(request={
            "name": subscription, "topic": pubsub_topic.topic, "ack_deadline_seconds": 10,
            "push_config": {"push_endpoint": f"{server.url}/"}})
        try:
            for future in [emulator_registry.publisher.publish(pubsub_topic.topic, n.encode()) for n in names]:
                future.result(timeout=10)
            wait_for(lambda: all(f"Hello {n}!" in server.log() for n in names), 20, interval=0.1)
            time.sleep(0.5)  # a redelivery (a push that was not acknowledged) would show as a second line
            log = server.log()
        finally:
            with contextlib.suppress(Exception):
                emulator_registry.subscriber.delete_subscription(subscription=subscription, timeout=5)
    assert [log.count(f"Hello {n}!") for n in names] == [1] * len(names), log[-3000:]
    whole_lines = re.findall(r"^Hello (\S+)!$", log, re.MULTILINE)
    assert sorted(whole_lines) == sorted(names), "greetings ran into other log lines"
