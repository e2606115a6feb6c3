"""cloudclients-emulator as a command: flags, readiness, topology, Storage, admin API, caps, signals.

Each test starts its own emulator process (they take about 0.2 s) and talks to it
with the real client libraries or plain HTTP, as users and CI do.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from google.pubsub_v1 import PublisherClient as GapicPublisher

from tests.emulator_proc import PROJECT, emulator, http, registry, topic_and_subscription

pytest.importorskip("cloudclients_emulator", reason="the emulator package (pip install -e emulator/) is needed")


def test_ready_line_readiness_and_clean_sigterm() -> None:
    """Port 0 picks a free port, printed as one export line; GET / answers Ok; SIGTERM exits 0."""
    with emulator() as (proc, env):
        host = env["PUBSUB_EMULATOR_HOST"]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", host) and not host.endswith(":0")
        assert http(f"http://{host}/") == (200, "Ok")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_storage_port_and_topology(tmp_path: Path) -> None:
    """--storage-port starts gcp-storage-emulator (printed first, stopped with us); --topology
    creates topics, subscriptions (with their settings) and buckets before the ready line."""
    topology = tmp_path / "topology.json"
    topology.write_text(
        json.dumps(
            {
                "topics": [
                    {"name": "orders", "subscriptions": [{"name": "orders-worker", "ackDeadlineSeconds": 42}]},
                    {"name": f"projects/{PROJECT}/topics/audit"},
                ],
                "buckets": ["receipts"],
            }
        )
    )
    with emulator("--storage-port", "0", "--topology", str(topology)) as (proc, env):
        assert list(env) == ["STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"]
        reg = registry(env)
        try:
            topics = {t.name for t in reg.publisher.list_topics(project=f"projects/{PROJECT}")}
            assert topics == {f"projects/{PROJECT}/topics/orders", f"projects/{PROJECT}/topics/audit"}
            sub = reg.subscriber.get_subscription(subscription=f"projects/{PROJECT}/subscriptions/orders-worker")
            assert sub.topic == f"projects/{PROJECT}/topics/orders" and sub.ack_deadline_seconds == 42
            assert [b.name for b in reg.storage.list_buckets()] == ["receipts"]
        finally:
            reg.close(timeout=5)
        storage_url = env["STORAGE_EMULATOR_HOST"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(storage_url, timeout=2)  # the storage child went with it


def test_bad_topology_fails_with_a_message(tmp_path: Path) -> None:
    """Buckets without --storage-port: exit 2 and a one-line reason, not a traceback."""
    topology = tmp_path / "t.json"
    topology.write_text(json.dumps({"buckets": ["receipts"]}))
    done = subprocess.run(
        [sys.executable, "-m", "cloudclients_emulator", "--host-port", "127.0.0.1:0", "--topology", str(topology)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "buckets but no --storage-port" in done.stderr and "Traceback" not in done.stderr


def test_admin_faults_reset_and_stats() -> None:
    """The next N calls of a method fail with the chosen status, then calls succeed again; faults
    are listed and cleared; reset drops all state; stats reports backlog."""
    with emulator() as (_, env):
        base = f"http://{env['PUBSUB_EMULATOR_HOST']}"
        reg = registry(env)
        try:
            topic, sub = topic_and_subscription(reg, "faulty")

            fault = {"method": "GetTopic", "count": 2, "status": "NOT_FOUND"}
            assert http(base + "/admin/faults", "POST", fault)[0] == 200
            assert http(base + "/admin/faults")[1]["faults"] == [
                {"method": "GetTopic", "count": 2, "status": "NOT_FOUND", "delay_ms": 0}
            ]
            for _ in range(2):
                with pytest.raises(gexc.NotFound):
                    reg.publisher.get_topic(topic=topic, retry=None)
            assert reg.publisher.get_topic(topic=topic, retry=None).name == topic  # the third call passes

            http(base + "/admin/faults", "POST", {"method": "GetTopic", "count": -1, "status": "OK", "delay_ms": 300})
            began = time.monotonic()
            reg.publisher.get_topic(topic=topic, retry=None)
            assert time.monotonic() - began >= 0.3  # a delay-only fault slows the call down
            assert http(base + "/admin/faults", "DELETE")[0] == 200
            assert http(base + "/admin/faults")[1]["faults"] == []

            status, body = http(base + "/admin/faults", "POST", {"method": "GetTopic", "status": "NOPE"})
            assert status == 400 and "NOPE" in body["error"]

            reg.publisher.publish(topic, b"x").result(timeout=10)
            stats = http(base + "/admin/stats")[1]
            assert stats["rss_bytes"] > 0 and stats["topics"] == 1 and stats["open_streams"] == 0
            held = stats["subscriptions"][sub]["bytes"]
            assert stats["subscriptions"] == {
                sub: {"backlog": 1, "outstanding": 0, "retained": 0, "messages": 1, "bytes": held}
            }
            assert held > 0 and stats["held"] == {"messages": 1, "bytes": held}

            assert http(base + "/admin/reset", "POST", {})[0] == 200
            with pytest.raises(gexc.NotFound):
                reg.publisher.get_topic(topic=topic, retry=None)
            assert http(base + "/admin/nothing")[0] == 404
        finally:
            reg.close(timeout=5)


def test_memory_cap_refuses_publish_with_resource_exhausted() -> None:
    """A full subscription makes Publish fail with RESOURCE_EXHAUSTED naming it, and a WARNING is
    logged; nothing is dropped silently, and acking makes room again."""
    with emulator("--max-messages-per-subscription", "3", "--log-level", "WARNING") as (proc, env):
        reg = registry(env)
        try:
            topic, sub = topic_and_subscription(reg, "capped")

            def publish(*data: bytes) -> None:  # the raw Publish RPC: the batching client would retry
                request = {"topic": topic, "messages": [{"data": d} for d in data]}
                GapicPublisher.publish(reg.publisher, request=request, retry=None)

            publish(b"1", b"2", b"3")
            with pytest.raises(gexc.ResourceExhausted, match="capped"):
                publish(b"4")
            pulled = reg.subscriber.pull(subscription=sub, max_messages=3, timeout=10)
            assert sorted(m.message.data for m in pulled.received_messages) == [b"1", b"2", b"3"]
            reg.subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in pulled.received_messages])
            publish(b"4")  # room again
        finally:
            reg.close(timeout=5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        assert "is full" in proc.stderr.read()


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--host-port", "localhost", "is not HOST:PORT"),
        ("--storage-port", "99999", "is not a port number"),
        ("--max-messages-per-subscription", "0", "is not a positive whole number"),
        ("--max-bytes-per-subscription", "-5", "is not a positive whole number"),
    ],
)
def test_bad_flags_are_refused_naming_flag_and_value(flag: str, value: str, says: str) -> None:
    """A bad value exits 2 at once with the flag, the value and what is expected."""
    done = subprocess.run(
        [sys.executable, "-m", "cloudclients_emulator", f"{flag}={value}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert flag in done.stderr and repr(value) in done.stderr and says in done.stderr
