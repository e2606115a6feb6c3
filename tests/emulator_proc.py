"""Run ``cloudclients-emulator`` as a command for a test, and talk to it (shared by the emulator tests)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cloudclients import ClientRegistry, Settings

PROJECT = "cmd-project"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def emulator(*args: str, port: int = 0, preexec_fn: Callable[[], None] | None = None,
             ) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """Run the command; yield it and the variables its ``export`` lines set, once ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudclients_emulator", "--host-port", f"127.0.0.1:{port}", "--project", PROJECT,
         *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,  # noqa: PLW1509 - only resource limits, set by the tests that need them
    )
    assert proc.stdout is not None and proc.stderr is not None
    env: dict[str, str] = {}
    try:
        for line in proc.stdout:
            match = re.fullmatch(r"export (\w+)=(\S+)\n", line)
            assert match, f"unexpected output line {line!r}"
            env[match.group(1)] = match.group(2)
            if match.group(1) == "PUBSUB_EMULATOR_HOST":
                break
        else:
            pytest.fail(f"the emulator exited with {proc.wait()}: {proc.stderr.read()}")
        yield proc, env
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def http(url: str, method: str = "GET", body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    """One HTTP request with urllib; the status and the JSON (or text) answer."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        answer, status = exc.read(), exc.code
    try:
        return status, json.loads(answer)
    except ValueError:
        return status, answer.decode()


def registry(env: dict[str, str]) -> ClientRegistry:
    return ClientRegistry.from_settings(Settings.from_mapping({"CLOUDCLIENTS_PROJECT": PROJECT}, env), name="cmd")


def topic_and_subscription(reg: ClientRegistry, name: str, **fields: Any) -> tuple[str, str]:
    topic, sub = f"projects/{PROJECT}/topics/{name}", f"projects/{PROJECT}/subscriptions/{name}"
    reg.publisher.create_topic(name=topic)
    reg.subscriber.create_subscription(request={"name": sub, "topic": topic, **fields})
    return topic, sub
