"""uWSGI --master --processes 4, with and without --py-call-osafterfork.

Without that flag uWSGI forks its workers from C and Python's at-fork hooks never
run: the registry's pid check is then what gives each worker its own clients.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

from cloudclients.testing import TopicHandle
from tests.helpers import wait_for
from tests.servers import Load, uwsgi
from tests.test_faults import ok

pytestmark = [pytest.mark.slow, pytest.mark.fork]

MODES = {"osafterfork": ["--py-call-osafterfork"], "no-hooks": []}
BASE = ["--master", "--processes", "4", "--enable-threads", "--threads", "2"]


def post(url: str, body: bytes) -> dict[str, object]:
    req = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", MODES)
def test_each_uwsgi_worker_builds_its_own_clients(
    mode: str, cloudclients_env: dict[str, str], pubsub_topic: TopicHandle
) -> None:
    """200 publishing requests: 4 worker pids, one publisher built in each, every message arrives."""
    with uwsgi([*BASE, *MODES[mode]], cloudclients_env) as server:
        url = f"{server.url}/publish?hold=0.05&topic={quote(pubsub_topic.topic)}"
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda i: post(url, f"m{i}".encode()), range(200)))
    pids = {r["pid"] for r in replies}
    assert len(pids) == 4, pids
    for reply in replies:
        stats = reply["stats"]
        assert stats["clients"]["publisher"]["constructions"] == 1, stats  # type: ignore[index]
        assert stats["forks_seen"] >= 1, stats  # type: ignore[index]  # reset by hook or pid check
    messages = pubsub_topic.pull(expected=200, timeout=30)
    assert sorted(m.data.decode() for m in messages) == sorted(f"m{i}" for i in range(200))
    assert {m.attributes["pid"] for m in messages} == {str(p) for p in pids}


@pytest.mark.parametrize("mode", MODES)
def test_uwsgi_graceful_shutdown_flushes_acknowledged_publishes(
    mode: str, cloudclients_env: dict[str, str], pubsub_topic: TopicHandle, tmp_path: Path
) -> None:
    """Graceful shutdown (master FIFO ``q``) under load, confirmation after the response:
    nothing acknowledged is lost. (uWSGI skips Python's atexit in a worker that is busy
    when a *brutal* SIGTERM/SIGINT lands; see docs/deployment.md.)"""
    env = {**cloudclients_env, "CLOUDCLIENTS_PUBLISH_CONFIRM": "after_response",
           "CLOUDCLIENTS_BATCH_MAX_LATENCY": "0.5"}
    fifo = tmp_path / "master.fifo"
    with uwsgi([*BASE, *MODES[mode], "--master-fifo", str(fifo)], env) as server, \
            Load(f"{server.url}/track?topic={quote(pubsub_topic.topic)}", threads=8) as load:
        assert wait_for(lambda: len(ok(load.snapshot())) >= 100, 20), "100 acknowledged publishes"
        started = time.monotonic()
        fifo.write_text("q")
        returncode = server.process.wait(30)
        stopped = time.monotonic() - started
    acked = {o.body for o in ok(load.outcomes)}
    found = {m.data.decode() for m in pubsub_topic.pull(expected=len(acked), timeout=30)}
    print(f"uwsgi {mode}: {len(acked)} acknowledged, {len(acked & found)} found, stopped in {stopped:.2f} s, "
          f"exit {returncode}")
    assert not acked - found, f"{len(acked - found)} acknowledged publishes lost"
