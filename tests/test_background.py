"""Background subscriptions: declared without building anything, started lazily in the process
that runs them, every message handled at least once (ack on return, nack on exception), and
stopped cleanly when the registry closes — before the publisher is flushed. Under gunicorn with
three workers: all messages handled across a SIGTERM, duplicates counted, nothing hangs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, current_app

import cloudclients
from cloudclients import BackgroundSubscription, ClientRegistry, CloudClients, ReceivedMessage
from cloudclients.testing import TEST_PROJECT, TopicHandle, pull_messages
from tests.helpers import MakeApp, wait_for
from tests.servers import gunicorn


@pytest.fixture
def app(cloudclients_env: dict[str, str], make_app: MakeApp) -> Flask:
    """An app on the emulators (from the environment); its registry is closed after the test."""
    return make_app(name="bg-test", SHUTDOWN_TIMEOUT=10)


def test_subscribe_declares_without_building_anything(app: Flask, pubsub_topic: TopicHandle) -> None:
    """subscribe() builds no client and opens no stream (safe in a --preload master); short
    subscription names resolve against the project."""
    sub = cloudclients.subscribe(pubsub_topic.subscription.rsplit("/", 1)[1], lambda m: None, app=app)
    assert sub.subscription == pubsub_topic.subscription
    assert CloudClients.get_registry(app).peek("subscriber") is None
    assert not sub.running
    assert sub.stats()["received"] == 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"max_messages": 0}, "max_messages"), ({"max_bytes": 10}, "max_bytes"), ({"max_workers": 1000}, "max_workers"),
     ({"max_lease_duration": 1}, "max_lease_duration"), ({"max_messages": True}, "max_messages")],
)
def test_bad_flow_control_is_refused(app: Flask, kwargs: dict[str, Any], name: str) -> None:
    """An out-of-range flow-control value raises ValueError naming the parameter and the fix."""
    with pytest.raises(ValueError, match=f"{name}=.*Fix:"):
        cloudclients.subscribe("orders", lambda m: None, app=app, **kwargs)


def test_bad_subscription_name_is_refused(app: Flask) -> None:
    """A name that is neither short nor projects/P/subscriptions/S is refused with the fix."""
    with pytest.raises(ValueError, match=r"not a subscription name\. Fix"):
        cloudclients.subscribe("projects/p/topics/t", lambda m: None, app=app)


def test_every_message_is_handled_in_an_app_context(app: Flask, pubsub_topic: TopicHandle) -> None:
    """Started explicitly, the stream hands 50 messages to the handler (inside the app context),
    acks each on return: nothing is left in the subscription."""
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def handle(message: ReceivedMessage) -> None:
        with lock:
            seen.append((message.text, current_app.name))

    sub = cloudclients.subscribe(pubsub_topic.subscription, handle, app=app)
    with app.app_context():
        assert cloudclients.start_subscriptions() == 1
        assert cloudclients.start_subscriptions() == 0  # idempotent
    publisher = pubsub_topic.registry.publisher
    for f in [publisher.publish(pubsub_topic.topic, f"m{i}".encode()) for i in range(50)]:
        f.result(timeout=15)
    assert wait_for(lambda: sub.stats()["acked"] >= 50, 30), sub.stats()
    assert sorted(seen) == sorted((f"m{i}", "bg-test") for i in range(50))
    stats = sub.stats()
    assert stats["running"] and stats["received"] == 50 and stats["nacked"] == 0 and stats["pid"] == os.getpid()
    sub.stop(timeout=10)
    assert not sub.running
    assert pull_messages(pubsub_topic.registry, pubsub_topic.subscription, expected=1, timeout=2) == []


def test_a_failing_handler_nacks_and_the_message_comes_back(app: Flask, pubsub_topic: TopicHandle) -> None:
    """A handler that raises nacks the message; the service redelivers it and the second try acks."""
    attempts: Counter[str] = Counter()

    def handle(message: ReceivedMessage) -> None:
        attempts[message.text] += 1
        if attempts[message.text] == 1:
            raise RuntimeError("first try fails on purpose")

    sub = cloudclients.subscribe(pubsub_topic.subscription, handle, app=app)
    sub.start()
    pubsub_topic.registry.publisher.publish(pubsub_topic.topic, b"retry-me").result(timeout=15)
    assert wait_for(lambda: sub.stats()["acked"] == 1, 30), sub.stats()
    assert attempts["retry-me"] == 2
    assert sub.stats()["nacked"] == 1


def test_first_request_starts_the_stream(app: Flask, pubsub_topic: TopicHandle) -> None:
    """Without an explicit start, the first request the process serves starts the stream."""
    sub = cloudclients.subscribe(pubsub_topic.subscription, lambda m: None, app=app)
    app.get("/")(lambda: "ok")
    assert not sub.running
    assert app.test_client().get("/").status_code == 200
    assert sub.running


def test_close_waits_for_handlers_before_flushing_the_publisher(
    app: Flask, pubsub_topic: TopicHandle, emulator_registry: ClientRegistry, unique_name: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """registry.close() while a handler runs: the stream is cancelled, the handler finishes (not cut
    off) and acks, its publish — made after close began, on a publisher not built before — is
    flushed, and the stop is logged with its counts before the publisher's flush.

    (Whether the service then redelivers the message depends on it: a closed stream's unacked
    messages may be redelivered at once, so at-least-once handlers see a duplicate here.)"""
    out_topic = f"projects/{TEST_PROJECT}/topics/{unique_name('out')}"
    out_sub = f"projects/{TEST_PROJECT}/subscriptions/{unique_name('out-sub')}"
    emulator_registry.publisher.create_topic(name=out_topic)
    emulator_registry.subscriber.create_subscription(request={"name": out_sub, "topic": out_topic})
    entered, finished = threading.Event(), threading.Event()

    def handle(message: ReceivedMessage) -> None:
        entered.set()
        time.sleep(1.0)  # still running when close() starts
        cloudclients.get_publisher().publish(out_topic, b"derived:" + message.data)
        finished.set()

    sub = cloudclients.subscribe(pubsub_topic.subscription, handle, app=app)
    sub.start()
    emulator_registry.publisher.publish(pubsub_topic.topic, b"in-flight").result(timeout=15)
    assert entered.wait(30)
    with caplog.at_level("INFO", logger="cloudclients"):
        CloudClients.get_registry(app).close(timeout=10)
    assert finished.is_set()
    assert not sub.running
    assert [m.data for m in pull_messages(emulator_registry, out_sub, expected=1, timeout=15)] == [b"derived:in-flight"]
    messages = [r.getMessage() for r in caplog.records]
    stopped = next(i for i, m in enumerate(messages) if "background subscription" in m and "stopped" in m)
    flushed = next(i for i, m in enumerate(messages) if "publisher flushed" in m)
    assert stopped < flushed, messages
    assert "1 received, 1 acked, 0 nacked" in messages[stopped]


def test_a_stream_that_ends_is_reported(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """A subscription that does not exist ends the stream; stats() and the log say why."""
    sub: BackgroundSubscription = cloudclients.subscribe("does-not-exist", lambda m: None, app=app)
    with caplog.at_level("ERROR", logger="cloudclients"):
        sub.start()
        assert wait_for(lambda: sub.stats()["error"] is not None, 30)
    assert not sub.running
    assert "NotFound" in (sub.stats()["error"] or "")
    assert any("does-not-exist" in r.getMessage() and "ended" in r.getMessage() for r in caplog.records)


# -- under gunicorn ----------------------------------------------------------------------------


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stop_gracefully(server: Any, timeout: float = 30.0) -> tuple[float, str]:
    """SIGTERM to the master (as an orchestrator sends it); return (seconds to exit, full log)."""
    began = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gunicorn did not exit within {timeout} s of SIGTERM:\n{server.tail(4000)}")
    return time.monotonic() - began, server.log()


@pytest.mark.slow
@pytest.mark.fork
def test_gunicorn_workers_handle_every_message_across_a_sigterm(
    cloudclients_env: dict[str, str], pubsub_topic: TopicHandle, tmp_path: Path
) -> None:
    """300 messages, gunicorn --preload with 3 workers: SIGTERM mid-stream (every worker stops its
    stream, finishes its handlers and exits; none is killed), then a new gunicorn handles the rest.
    Every message is handled at least once; duplicates are counted and reported; the preload
    master never starts a stream."""
    record = tmp_path / "handled.jsonl"
    env = {**cloudclients_env, "CC_BG_SUBSCRIPTION": pubsub_topic.subscription, "CC_BG_RECORD": str(record),
           "CC_BG_DELAY": "0.02"}
    args = ["--preload", "-w", "3", "--config", "python:tests.apps.background_conf"]
    expected = {f"m{i}" for i in range(300)}
    publisher = pubsub_topic.registry.publisher
    report: dict[str, Any] = {}

    with gunicorn(args, env, app="tests.apps.background_app:app") as first:
        for f in [publisher.publish(pubsub_topic.topic, m.encode()) for m in sorted(expected)]:
            f.result(timeout=15)
        assert wait_for(lambda: len(records(record)) >= 100, 60), first.tail()
        report["first_stop_seconds"], first_log = stop_gracefully(first)
        report["handled_by_first"] = len(records(record))
    assert first.process.returncode == 0, first_log[-3000:]

    with gunicorn(args, env, app="tests.apps.background_app:app") as second:
        # Generous bound: Google's emulator redelivers a closed stream's messages only when their
        # lease (60 s) expires, and may close streams itself (GOAWAY too_many_pings); ours at once.
        assert wait_for(lambda: {r["data"] for r in records(record)} >= expected, 180), second.tail()
        report["second_stop_seconds"], second_log = stop_gracefully(second)
    assert second.process.returncode == 0, second_log[-3000:]

    handled = records(record)
    counts = Counter(r["data"] for r in handled)
    report.update(messages=len(expected), handled=len(handled), duplicates=sum(c - 1 for c in counts.values()),
                  workers=len({r["pid"] for r in handled}))
    print(f"\nbackground subscriber under gunicorn: {report}")
    assert set(counts) == expected

    for server, log in ((first, first_log), (second, second_log)):
        started = set(map(int, re.findall(r"background subscription \S+ started in pid (\d+)", log)))
        stopped = set(map(int, re.findall(r"background subscription \S+ stopped in pid (\d+)", log)))
        assert len(started) == 3, log[-3000:]
        assert server.process.pid not in started  # never in the preload master
        assert stopped == started, log[-3000:]
        assert "SIGKILL" not in log and "did not stop" not in log
    # Workers that handled messages are the ones that started streams, and more than one did.
    assert len({r["pid"] for r in handled}) >= 2
