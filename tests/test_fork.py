"""Fork safety: a forked child builds its own client and publishes; the parent keeps working.

Each case runs in a fresh interpreter (tests/apps/fork_publish.py) so that
GRPC_ENABLE_FORK_SUPPORT is set before grpc is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudclients.testing import TopicHandle

SCRIPT = Path(__file__).parent / "apps" / "fork_publish.py"

pytestmark = [pytest.mark.fork, pytest.mark.slow]


@pytest.mark.parametrize("grpc_fork_support", [None, "0"], ids=["fork-support-unset", "fork-support-0"])
@pytest.mark.parametrize("method", ["os", "mp", "ctypes"])
def test_forked_child_gets_fresh_client_and_publishes(
    method: str, grpc_fork_support: str | None, cloudclients_env: dict[str, str], pubsub_topic: TopicHandle
) -> None:
    """The child of a process with a live publisher builds a new one, publishes within 10 s,
    and the parent's client keeps publishing; every message reaches the subscription."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    if grpc_fork_support is not None:
        env["GRPC_ENABLE_FORK_SUPPORT"] = grpc_fork_support
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), method, pubsub_topic.topic],
        env=env, capture_output=True, text=True, timeout=90, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    child = result["child"]
    assert not result.get("child_hung"), result
    assert child is not None and child["ok"], (child, proc.stderr[-3000:])
    assert result["child_status"] == 0
    # The child forgot the inherited client: nothing alive, nothing built, until first use.
    assert child["before"]["clients"]["publisher"] == {"alive": False, "constructions": 0, "metrics": {}}
    assert child["before"]["pid"] == child["pid"] != result["parent_pid"]
    assert child["new_client"]
    assert child["after"]["clients"]["publisher"]["constructions"] == 1
    assert child["seconds"] < 10
    if grpc_fork_support == "0":
        # gRPC cannot work in a child of a gRPC-using parent without fork support.
        assert child["transport"] == "PublisherRestTransport"
    assert result["parent_same_client"]
    assert result["parent_stats"]["clients"]["publisher"]["constructions"] == 1

    messages = pubsub_topic.pull(expected=3, timeout=20)
    assert sorted(m.data for m in messages) == [b"child", b"parent-after", b"parent-before"]


_C_FORK_RACE = r"""
import ctypes, json, os, sys, threading, time
from cloudclients import ClientRegistry

sys.setswitchinterval(1e-6)                 # switch threads as often as possible: races show up

registry = ClientRegistry("c-fork")
registry.register("thing", lambda: (time.sleep(0.005), object())[1], close=lambda c, t: None)
registry.get("thing")                       # built in the parent
read, write = os.pipe()
pid = ctypes.CDLL(None).fork()              # C-level fork: Python's at-fork hooks do not run
if pid == 0:
    barrier = threading.Barrier(32)
    got = []
    def worker():
        barrier.wait()
        got.append(registry.get("thing"))   # every thread hits the pid check at once
    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads: t.start()
    for t in threads: t.join()
    stats = registry.stats()
    os.write(write, json.dumps({
        "distinct": len({id(c) for c in got}),
        "constructions": stats["clients"]["thing"]["constructions"],
        "forks_seen": stats["forks_seen"],
        "alive_is_returned": registry.peek("thing") is got[0],
    }).encode())
    os._exit(0)
os.close(write)
os.waitpid(pid, 0)
print(os.read(read, 4096).decode())
"""


@pytest.mark.fork
def test_threads_racing_the_pid_check_after_a_c_level_fork_reset_once() -> None:
    """After a fork that skips Python's hooks (uWSGI without --py-call-osafterfork), 32 threads
    hit the pid check together: the registry resets once and builds one client, which every
    thread gets. (A second reset would orphan a client already built, with its unsent batches.)"""
    for _ in range(10):
        done = subprocess.run(
            [sys.executable, "-c", _C_FORK_RACE], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result == {"distinct": 1, "constructions": 1, "forks_seen": 1, "alive_is_returned": True}
