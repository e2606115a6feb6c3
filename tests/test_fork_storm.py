"""Fork storm: 100 forks while 8 threads publish, under each GRPC_ENABLE_FORK_SUPPORT setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudclients.testing import TopicHandle

SCRIPT = Path(__file__).parent / "apps" / "fork_storm.py"
FORKS, THREADS = 100, 8

pytestmark = [pytest.mark.slow, pytest.mark.fork]


@pytest.mark.parametrize("fork_support", [None, "0", "1"], ids=["unset", "0", "1"])
def test_fork_storm(fork_support: str | None, cloudclients_env: dict[str, str], pubsub_topic: TopicHandle) -> None:
    """No child hangs (each publishes within 10 s with its own client), the parent keeps
    publishing during and after the storm, and every child's message arrives."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    if fork_support is not None:
        env["GRPC_ENABLE_FORK_SUPPORT"] = fork_support
    proc = subprocess.run([sys.executable, str(SCRIPT), pubsub_topic.topic, str(FORKS), str(THREADS)],
                          env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"GRPC_ENABLE_FORK_SUPPORT={fork_support}: {json.dumps(report)}")
    assert report["hung"] == 0, report
    assert report["children_ok"] == FORKS, report
    assert report["parent_published_during_storm"] > 0 and report["parent_published_after_storm"] > 0, report
    assert report["parent_errors"] == [], report
    if fork_support == "0":  # children of a gRPC process cannot use gRPC then: REST (see cloudclients._google.channels)
        assert report["transports"] == ["PublisherRestTransport"], report
    else:
        assert report["transports"] == ["PublisherGrpcTransport"], report
    children = [m for m in pubsub_topic.pull(expected=10_000, timeout=8) if m.attributes["side"] == "child"]
    assert sorted(m.data.decode() for m in children) == sorted(f"child-{n}" for n in range(FORKS))
