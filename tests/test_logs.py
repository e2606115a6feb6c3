"""Lifecycle logs on the `cloudclients` logger: client creation (kind, pid, milliseconds), the
reset after fork, background start/stop and the shutdown flush — at INFO. (That no log line
carries a credential is tests/test_secrets.py's job: it plants a key and a token and scans
every record of a full lifecycle.)"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from cloudclients import ClientRegistry, Settings
from cloudclients.testing import TopicHandle
from tests.helpers import wait_for


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cloudclients"]


def test_client_creation_is_logged_with_kind_pid_and_milliseconds(
    emulator_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Building each client logs one INFO line naming its kind, this pid and the time it took."""
    registry = ClientRegistry.from_settings(emulator_settings, name="logs")
    with caplog.at_level(logging.INFO, logger="cloudclients"):
        for kind in ("publisher", "subscriber", "storage"):
            registry.get(kind)
            registry.get(kind)  # cached: no second line
    registry.close(timeout=5)
    created = [m for m in messages(caplog) if "created" in m]
    assert len(created) == 3
    for kind, line in zip(("publisher", "subscriber", "storage"), created, strict=True):
        assert re.fullmatch(rf"cloudclients: created {kind} client in pid {os.getpid()} \(\d+\.\d ms\)", line), line


@pytest.mark.fork
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # forks on purpose
def test_reset_after_fork_is_logged_in_the_child(tmp_path: Path) -> None:
    """A forked child logs that its registry was reset (its pid, the parent's pid, which
    mechanism) — through the handlers it inherited."""
    log_file = tmp_path / "child.log"
    handler = logging.FileHandler(log_file)
    logger = logging.getLogger("cloudclients")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    registry = ClientRegistry("fork-logs")
    registry.register("thing", object)
    registry.get("thing")
    try:
        pid = os.fork()
        if pid == 0:  # the child: the at-fork hook has already run and logged
            handler.flush()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()
    assert os.waitstatus_to_exitcode(status) == 0
    text = log_file.read_text()
    assert f"registry 'fork-logs' reset in pid {pid} after fork from pid {os.getpid()} (at-fork hook)" in text, text
    registry.close()


def test_shutdown_flush_and_background_stop_are_logged(
    emulator_settings: Settings, pubsub_topic: TopicHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """close() logs the background stop with its counts, then how many publishes were flushed."""
    from cloudclients import BackgroundSubscription

    registry = ClientRegistry.from_settings(emulator_settings, name="flush-logs")
    handled: list[bytes] = []
    sub = BackgroundSubscription(registry, pubsub_topic.subscription, lambda m: handled.append(m.data))
    with caplog.at_level(logging.INFO, logger="cloudclients"):
        sub.start()
        futures = [registry.publisher.publish(pubsub_topic.topic, f"f{i}".encode()) for i in range(5)]
        wait_for(lambda: len(handled) >= 5, 20, interval=0.05)
        registry.close(timeout=10)
    assert all(f.done() for f in futures)
    lines = messages(caplog)
    started = next(m for m in lines if "background subscription" in m and "started" in m)
    stopped = next(m for m in lines if "background subscription" in m and "stopped" in m)
    flushed = next(m for m in lines if "publisher flushed" in m)
    assert f"in pid {os.getpid()}" in started and "max_messages=100" in started
    assert "5 received, 5 acked, 0 nacked" in stopped
    assert re.search(r"publisher flushed \d+ message\(s\) at close \(0 failed\)", flushed), flushed
    assert lines.index(stopped) < lines.index(flushed)

