"""gevent: when the process is monkey-patched, gRPC is switched to gevent mode before the first
client is built — in a plain patched script and in gunicorn -k gevent workers, where requests
publish and store concurrently; an unpatched process is left alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

from cloudclients import ClientRegistry, gevent_status
from cloudclients.testing import TopicHandle
from tests.servers import gunicorn

pytest.importorskip("gevent", reason="gevent is not installed (pip install gevent)")

ROOT = Path(__file__).resolve().parent.parent


def test_unpatched_process_keeps_grpc_as_is(emulator_registry: ClientRegistry) -> None:
    """Without monkey-patching, building clients does not switch gRPC to gevent mode."""
    emulator_registry.get("publisher")
    assert gevent_status() == {"patched": False, "grpc_gevent": False}


@pytest.mark.slow
def test_patched_script_switches_grpc_before_the_first_client(
    cloudclients_env: dict[str, str], pubsub_topic: TopicHandle
) -> None:
    """A patch_all() script: gevent mode is off until the first client is built, then on, and
    20 greenlets publish through the one publisher; every message arrives."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "apps" / "gevent_script.py"), pubsub_topic.topic],
        env={**os.environ, **cloudclients_env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["before"] is False and result["enabled"] is True
    switched = proc.stderr.index("gRPC switched to gevent mode")
    assert switched < proc.stderr.index("created publisher client"), proc.stderr[-3000:]
    messages = pubsub_topic.pull(expected=20, timeout=30)
    assert sorted(m.message_id for m in messages) == sorted(result["ids"])


@pytest.mark.slow
def test_gunicorn_gevent_workers_publish_and_store(
    cloudclients_env: dict[str, str], pubsub_topic: TopicHandle, emulator_registry: ClientRegistry
) -> None:
    """gunicorn -k gevent, 2 workers: 60 concurrent requests each publish (confirmed) and upload a
    blob; all succeed, every message arrives, each worker reports gRPC in gevent mode, and
    /healthz is 200."""
    bucket = f"gevent-{os.getpid()}-{pubsub_topic.topic_id[-10:]}"
    emulator_registry.storage.create_bucket(bucket)
    args = ["-k", "gevent", "-w", "2", "--worker-connections", "100"]
    with gunicorn(args, cloudclients_env, app="tests.apps.ops_app:app") as server:
        url = f"{server.url}/publish?topic={quote(pubsub_topic.topic)}&bucket={bucket}"

        def post(i: int) -> dict[str, object]:
            req = urllib.request.Request(url, data=f"e{i}".encode(), method="POST")
            with urllib.request.urlopen(req, timeout=60) as resp:
                assert resp.status == 200
                return json.loads(resp.read())  # type: ignore[no-any-return]

        with ThreadPoolExecutor(30) as pool:
            replies = list(pool.map(post, range(60)))
        stats = []
        for _ in range(10):  # reach both workers
            with urllib.request.urlopen(f"{server.url}/stats", timeout=10) as resp:
                stats.append(json.loads(resp.read()))
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as resp:
            assert resp.status == 200
        log = server.log()

    served = {r["pid"] for r in replies}
    for s in stats:
        if s["registry"]["clients"]["publisher"]["alive"]:
            assert s["gevent_patched"] and s["grpc_gevent"], s
    # Every worker that built a client had switched gRPC to gevent mode first.
    builders = re.findall(r"created \w+ client in pid (\d+)", log)
    assert set(map(int, builders)) >= served
    for pid in set(builders):
        assert log.index(f"detected in pid {pid}; gRPC switched") < log.index(f"client in pid {pid}"), log[-3000:]
    assert "after gRPC clients were built" not in log
    messages = pubsub_topic.pull(expected=60, timeout=30)
    assert sorted(m.data.decode() for m in messages) == sorted(f"e{i}" for i in range(60))
    blobs = {b.name for b in emulator_registry.storage.list_blobs(bucket)}
    assert blobs == {str(r["message_id"]) for r in replies}
    print(f"\ngunicorn -k gevent: 60 requests served by pids {sorted(served)}; gRPC gevent mode in each")
