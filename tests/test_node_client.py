"""The official Node.js client (``@google-cloud/pubsub``) against our emulator.

``emulator/node/roundtrip.js`` creates a topic and a subscription, publishes 50
messages with attributes in one batch, receives them by streaming pull
(``subscription.on('message')``), acks each and prints a one-line JSON summary.
``make test`` / ``make test-slow`` install its pinned dependencies first
(``make node-deps``, i.e. ``npm ci --prefix emulator/node``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cloudclients.testing import start_pubsub_emulator

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parent.parent / "emulator" / "node"
SCRIPT = NODE_DIR / "roundtrip.js"
PROJECT = "node-project"
COUNT = 50


@pytest.fixture
def node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js client check needs Node.js >= 18")
    if not (NODE_DIR / "node_modules" / "@google-cloud" / "pubsub").is_dir():
        reason = "emulator/node/node_modules is missing: run `make node-deps` (npm ci --prefix emulator/node)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs it through `make test`; never skip silently there
        pytest.skip(reason)
    return node


def test_node_client_publish_and_streaming_pull_round_trip(node: str) -> None:
    """50 messages published by @google-cloud/pubsub come back over StreamingPull, each exactly
    once, with their ids, payloads and attributes intact."""
    emulator = start_pubsub_emulator(project=PROJECT, kind="cloudclients")
    try:
        env = {**os.environ, **emulator.env, "PUBSUB_PROJECT_ID": PROJECT, "ROUNDTRIP_TIMEOUT_MS": "60000"}
        started = time.monotonic()
        proc = subprocess.run(
            [node, str(SCRIPT), PROJECT, str(COUNT)],
            env=env,
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        elapsed = time.monotonic() - started
        emulator_log = emulator.log_tail()
    finally:
        emulator.stop()

    details = f"exit {proc.returncode} after {elapsed:.1f}s\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    details += f"\nemulator log:\n{emulator_log}"
    assert proc.returncode == 0, details
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, details
    summary = json.loads(lines[-1])

    assert summary["ok"] is True, details
    assert summary["published"] == COUNT, details
    assert summary["received"] == summary["published"], details
    assert summary["missing"] == [], details
    assert summary["unexpected"] == 0, details
    assert summary["duplicates"] == 0, details
    assert summary["dataMismatches"] == 0, details
    # Attributes (including non-ASCII values) round-tripped on every message.
    assert summary["attributeMismatches"] == 0, details
    assert summary["attributesChecked"] == COUNT, details
