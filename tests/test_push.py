"""Push endpoint end to end: an emulator push subscription delivers to the app served by a real
gunicorn; 2xx acks, an exception nacks, an unverified push is refused and stays in the
subscription. (Envelopes: tests/test_push_envelope.py; authentication modes: tests/test_push_auth.py.)"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cloudclients import ClientRegistry
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
    env = {**cloudclients_env, "CLOUDCLIENTS_PUSH_AUTH": "unauthenticated", "CC_PUSH_RECORD": str(record)}
    with gunicorn(["-w", "2", "--threads", "4"], env, app="tests.apps.push_app:app") as server:
        topic, sub = push_subscription(f"{server.url}/push")
        publisher = emulator_registry.publisher
        started = time.monotonic()
        ids = {publisher.publish(topic, f"m{i}".encode(), n=str(i)).result(timeout=15): f"m{i}" for i in range(29)}
        failing = publisher.publish(topic, b"flaky", fail="once").result(timeout=15)
        ids[failing] = "flaky"

        def handled() -> set[str]:
            return {r["id"] for r in read_records(record) if "id" in r}

        assert wait_for(lambda: handled() >= set(ids), 60), f"missing: {set(ids) - handled()}\n{server.tail()}"
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
                assert got == status, (token, server.tail())
            emulator_registry.subscriber.modify_push_config(request={"subscription": sub, "push_config": {}})
        assert [r["id"] for r in read_records(record)] == ["101"]
        assert issuer.requests == 1
        pulled = pull_messages(emulator_registry, sub, expected=1, timeout=30)
        assert [m.message_id for m in pulled] == [message_id]
    finally:
        issuer.stop()
