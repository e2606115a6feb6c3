"""A user's project in a directory, run by a pytest of its own (a subprocess): how the testing kit's
tests meet the plugin — through its entry point, as users do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# What the parent test session's plugin exported: a sample project starts from a clean slate.
_INHERITED = ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "PYTEST_ADDOPTS",
              "GCE_METADATA_HOST", "GCE_METADATA_IP", "NO_GCE_CHECK", "_CLOUDCLIENTS_TESTING_HIDDEN",
              "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")

INI = """\
[pytest]
cloudclients_emulators = pubsub storage
cloudclients_topology = topology.json
"""


def write_project(root: Path, files: dict[str, str]) -> Path:
    """Write *files* (name → text, dedented) under *root*."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def run_pytest(
    root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``python -m pytest *args`` in *root*, with *env* on top of a clean environment."""
    clean = {k: v for k, v in os.environ.items() if k not in _INHERITED}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=root,
                          env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False)


def output(done: subprocess.CompletedProcess[str]) -> str:
    """The end of a run's output, for assertion messages."""
    return done.stdout[-3000:] + done.stderr[-3000:]


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The ``ERROR:`` lines of a run."""
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("ERROR:")]


def header(done: subprocess.CompletedProcess[str], start: str) -> str:
    """The one session-header line starting with *start*."""
    found = [line for line in done.stdout.splitlines() if line.startswith(start)]
    assert len(found) == 1, done.stdout[:3000]
    return found[0]
