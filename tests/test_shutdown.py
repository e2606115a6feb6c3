"""Publishes still batched when the process ends are flushed by the exit handlers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cloudclients.testing import TopicHandle

SCRIPT = Path(__file__).parent / "apps" / "exit_publish.py"
COUNT = 50

pytestmark = pytest.mark.slow


def run(mode: str, topic: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), mode, topic, str(COUNT)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "queued"
        if mode.startswith("sigterm"):
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_atexit_flushes_queued_publishes(cloudclients_env: dict[str, str], pubsub_topic: TopicHandle) -> None:
    """A process that returns with messages still batched delivers all of them."""
    result = run("atexit", pubsub_topic.topic)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(pubsub_topic.pull(expected=COUNT, timeout=20)) == COUNT


def test_sigterm_flushes_then_dies_of_sigterm(cloudclients_env: dict[str, str], pubsub_topic: TopicHandle) -> None:
    """SIGTERM flushes every queued publish, then the process still ends by SIGTERM."""
    result = run("sigterm", pubsub_topic.topic)
    assert result.returncode == -signal.SIGTERM, result.stderr[-2000:]
    assert len(pubsub_topic.pull(expected=COUNT, timeout=20)) == COUNT


def test_sigterm_chains_to_the_apps_own_handler(cloudclients_env: dict[str, str], pubsub_topic: TopicHandle) -> None:
    """An app's own SIGTERM handler still runs, after the flush."""
    result = run("sigterm-chained", pubsub_topic.topic)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "app handler ran" in result.stdout
    assert len(pubsub_topic.pull(expected=COUNT, timeout=20)) == COUNT


def test_without_exit_handlers_sigterm_loses_the_batch(
    cloudclients_env: dict[str, str], pubsub_topic: TopicHandle
) -> None:
    """Control: with CLOUDCLIENTS_EXIT_HANDLERS=False the queued messages are lost, as with a bare client."""
    result = run("sigterm", pubsub_topic.topic, {"TEST_NO_EXIT_HANDLERS": "1"})
    assert result.returncode == -signal.SIGTERM
    assert pubsub_topic.pull(expected=1, timeout=3) == []
