"""Request-scoped publishing: a 2xx means confirmed, or every failure is logged and counted."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest
from flask import Flask, jsonify, request

import cloudclients
from cloudclients import CloudClients, PublishError
from cloudclients.testing import TEST_PROJECT, TopicHandle
from tests.helpers import MakeApp, wait_for


@pytest.fixture
def publish_app(make_app: MakeApp) -> MakeApp:
    """``publish_app(**settings)``: an app publishing at /publish/<topic> and /confirm/<topic>
    (publish timeout 5 s unless *settings* say otherwise)."""

    def make(**settings: Any) -> Flask:
        app = make_app(name="publish-app", **{"PUBLISH_TIMEOUT": 5, **settings})

        @app.post("/publish/<topic>")
        def publish_view(topic: str) -> Any:
            cloudclients.publish(topic, "hello", source="test", **request.args)
            return {"ok": True}

        @app.post("/confirm/<topic>")
        def confirm_view(topic: str) -> Any:
            cloudclients.publish(topic, b"one", n="1")
            cloudclients.publish(topic, b"two", n="2")
            try:
                ids = cloudclients.confirm_publishes()
            except PublishError as exc:
                return {"confirmed": False, "failures": len(exc.failures)}, 502
            return {"confirmed": True, "ids": ids}

        return app

    return make


@pytest.fixture
def app(cloudclients_env: dict[str, str], publish_app: MakeApp) -> Flask:
    """A publishing app on the session's emulators (found through the environment)."""
    return publish_app()


def publisher_metrics(app: Flask) -> dict[str, int]:
    return CloudClients.get_registry(app).stats()["clients"]["publisher"]["metrics"]


def test_confirmed_before_the_response(app: Flask, pubsub_topic: TopicHandle) -> None:
    """Default mode: the 200 leaves only after the emulator confirmed the message."""
    response = app.test_client().post(f"/publish/{pubsub_topic.topic_id}")
    assert response.status_code == 200
    # Confirmed means already counted, with nothing outstanding, at response time.
    assert publisher_metrics(app) == {"published": 1, "failed": 0, "outstanding": 0}
    [message] = pubsub_topic.pull(expected=1)
    assert (message.data, dict(message.attributes)) == (b"hello", {"source": "test"})


def test_failure_before_the_response_is_a_503(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """A publish to a missing topic turns the view's 200 into a 503 naming the topic; logged too."""
    with caplog.at_level(logging.ERROR, logger="cloudclients"):
        response = app.test_client().post("/publish/no-such-topic")
    assert response.status_code == 503
    body = response.get_data(as_text=True)
    assert f"projects/{TEST_PROJECT}/topics/no-such-topic" in body and "NotFound" in body
    assert any("no-such-topic" in r.getMessage() and "NotFound" in r.getMessage() for r in caplog.records)
    assert publisher_metrics(app)["failed"] == 1


def test_app_can_handle_publish_error(app: Flask) -> None:
    """@app.errorhandler(PublishError) shapes the answer."""

    @app.errorhandler(PublishError)
    def handle(exc: PublishError) -> Any:
        return jsonify(retry=True, topics=[f.topic for f in exc.failures]), 502

    response = app.test_client().post("/publish/no-such-topic")
    assert response.status_code == 502
    assert response.get_json() == {"retry": True, "topics": [f"projects/{TEST_PROJECT}/topics/no-such-topic"]}


def test_confirm_publishes_inside_the_view(app: Flask, pubsub_topic: TopicHandle) -> None:
    """confirm_publishes() returns the message IDs in order, or raises for the view to handle."""
    ok = app.test_client().post(f"/confirm/{pubsub_topic.topic_id}")
    assert ok.status_code == 200
    ids = ok.get_json()["ids"]
    pulled = pubsub_topic.pull(expected=2)
    assert ids == [m.message_id for m in sorted(pulled, key=lambda m: m.attributes["n"])]
    failed = app.test_client().post("/confirm/missing-topic")
    assert (failed.status_code, failed.get_json()) == (502, {"confirmed": False, "failures": 2})


def test_after_response_mode_logs_and_counts_failures(
    cloudclients_env: dict[str, str], publish_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    """after_response: the requests are not held up; every failure is counted, and a burst of 20 is
    logged once (rate-limited per topic) with the topic and the error — never an attribute value
    (each failure used to be a line of its own, quoting the attributes)."""
    app = publish_app(PUBLISH_CONFIRM="after_response")
    with caplog.at_level(logging.ERROR, logger="cloudclients"):
        for _ in range(20):
            assert app.test_client().post("/publish/gone-topic?secret=attr-value-7f3a").status_code == 200
        wait_for(lambda: publisher_metrics(app)["failed"] >= 20, 10, interval=0.05)
    assert publisher_metrics(app)["failed"] == 20
    [record] = [r for r in caplog.records if "gone-topic" in r.getMessage()]
    assert f"projects/{TEST_PROJECT}/topics/gone-topic" in record.getMessage()
    assert "NotFound" in record.getMessage()
    assert all("attr-value-7f3a" not in r.getMessage() for r in caplog.records)


def test_a_503_names_the_attributes_but_never_their_values(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """before_response: the 503 body and the log say which topic failed and why, and name the
    attributes, but never quote an attribute value (application data)."""
    with caplog.at_level(logging.ERROR, logger="cloudclients"):
        response = app.test_client().post("/publish/gone-topic?secret=attr-value-7f3a")
    body = response.get_data(as_text=True)
    assert response.status_code == 503 and "gone-topic" in body and "NotFound" in body
    assert "attributes secret, source" in body
    assert "attr-value-7f3a" not in body
    assert caplog.records and all("attr-value-7f3a" not in r.getMessage() for r in caplog.records)


def test_unreachable_backend_fails_within_the_publish_timeout(
    publish_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens on the emulator port: the request answers 503 within the
    configured timeout (plus the bounded grace), it does not hang."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # closed again when the block ends: nothing listens
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{dead_port}")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", TEST_PROJECT)
    app = publish_app(PUBLISH_TIMEOUT=1.5, SHUTDOWN_TIMEOUT=1)
    started = time.monotonic()
    response = app.test_client().post("/publish/any-topic")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    # The bound from the docs: publish timeout + batch latency + 2 s grace.
    assert elapsed < 1.5 + 0.01 + 2.0 + 1.0, elapsed


def test_topic_names_and_data(app: Flask) -> None:
    """Malformed names and data types are refused clearly (short names: test_outside_a_request_nothing_waits)."""
    with app.app_context():
        with pytest.raises(ValueError, match=r"topic='projects/x/subscriptions/y' is not a topic name"):
            cloudclients.publish("projects/x/subscriptions/y", b"x")
        with pytest.raises(TypeError, match="must be bytes or str, not dict"):
            cloudclients.publish("orders", {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="needs a Flask application context"):
        cloudclients.publish("orders", b"x")


def test_outside_a_request_nothing_waits(app: Flask, pubsub_topic: TopicHandle) -> None:
    """In an app context without a request (CLI, jobs) publish() returns the future to wait on."""
    with app.app_context():
        future = cloudclients.publish(pubsub_topic.topic_id, b"job")
        assert cloudclients.confirm_publishes() == []
        assert future.result(timeout=10)
    assert [m.data for m in pubsub_topic.pull(expected=1)] == [b"job"]


# -- one standard for both publish APIs -------------------------------------------------------


def test_the_plain_publisher_takes_short_names_and_text(app: Flask, pubsub_topic: TopicHandle) -> None:
    """get_publisher().publish() accepts what cloudclients.publish() accepts: a short topic name
    (resolved against the project) and str data (UTF-8)."""
    with app.app_context():
        future = cloudclients.get_publisher().publish(pubsub_topic.topic_id, "héllo", kind="text")
        assert future.result(timeout=10)
        with pytest.raises(TypeError, match="must be bytes or str, not int"):
            cloudclients.get_publisher().publish(pubsub_topic.topic_id, 42)  # type: ignore[arg-type]
    [message] = pubsub_topic.pull(expected=1)
    assert (message.data, dict(message.attributes)) == ("héllo".encode(), {"kind": "text"})


def test_unwaited_plain_publish_failures_are_logged_once_per_burst_and_counted(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """Futures of get_publisher().publish() that nobody waits for: a failure is logged at ERROR with
    the topic and the error (never the data) and counted; a burst of them is one line, not twenty."""
    @app.post("/fire-and-forget")
    def fire_and_forget() -> str:
        cloudclients.get_publisher().publish("missing-topic", b"secret-payload")
        return "ok"

    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="cloudclients"):
        for _ in range(20):
            assert client.post("/fire-and-forget").status_code == 200
        wait_for(lambda: publisher_metrics(app)["failed"] >= 20, 15, interval=0.05)
    assert publisher_metrics(app)["failed"] == 20
    lines = [r.getMessage() for r in caplog.records if "missing-topic" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"projects/{TEST_PROJECT}/topics/missing-topic" in lines[0] and "NotFound" in lines[0]
    assert all("secret-payload" not in r.getMessage() for r in caplog.records)


def test_a_plain_publish_failure_does_not_claim_nobody_waited(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """A get_publisher().publish() future whose caller does wait on it: the failure is still logged
    (the publisher cannot know), but the line no longer says "nobody waited for it"."""
    with app.app_context(), caplog.at_level(logging.ERROR, logger="cloudclients"):
        future = cloudclients.get_publisher().publish("missing-topic-waited", b"x")
        with pytest.raises(Exception, match=r"NotFound|not found|404"):
            future.result(timeout=15)
        wait_for(lambda: any("missing-topic-waited" in r.getMessage() for r in caplog.records), 5, interval=0.05)
    [line] = [r.getMessage() for r in caplog.records if "missing-topic-waited" in r.getMessage()]
    assert "nobody waited" not in line and "logged whether or not its caller checks it" in line
