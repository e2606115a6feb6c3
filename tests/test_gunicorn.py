"""A real gunicorn --preload master with 4 workers: one publisher per worker, none in the master."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

from cloudclients.testing import TopicHandle
from tests.servers import gunicorn

pytestmark = [pytest.mark.slow, pytest.mark.fork]


def post(url: str, body: bytes) -> dict[str, object]:
    req = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_preloaded_gunicorn_builds_one_publisher_per_worker(
    cloudclients_env: dict[str, str], pubsub_topic: TopicHandle, tmp_path: Path
) -> None:
    """200 publishing requests through gunicorn --preload -w 4 --threads 4: 4 worker pids serve,
    each built exactly one publisher, the master built none, and every message is pulled back."""
    master_stats = tmp_path / "master.json"
    args = ["--preload", "-w", "4", "--threads", "4", "--worker-connections", "4",
            "--config", "python:tests.apps.gunicorn_conf"]
    with gunicorn(args, {**cloudclients_env, "CC_MASTER_STATS": str(master_stats)}) as server:
        url = f"{server.url}/publish?hold=0.05&topic={quote(pubsub_topic.topic)}"
        with ThreadPoolExecutor(32) as pool:
            replies = list(pool.map(lambda i: post(url, f"m{i}".encode()), range(200)))
    assert master_stats.exists(), "the master's on_exit hook did not run"

    pids = {r["pid"] for r in replies}
    assert len(pids) == 4, pids
    for reply in replies:
        assert reply["stats"]["clients"]["publisher"]["constructions"] == 1  # type: ignore[index]
    master = json.loads(master_stats.read_text())
    assert master["pid"] not in pids
    assert all(c["constructions"] == 0 for c in master["stats"]["clients"].values()), master

    messages = pubsub_topic.pull(expected=200, timeout=30)
    assert sorted(m.data.decode() for m in messages) == sorted(f"m{i}" for i in range(200))
    assert {r["message_id"] for r in replies} == {m.message_id for m in messages}
    assert {m.attributes["pid"] for m in messages} == {str(p) for p in pids}
