"""`make demo` end to end: the example app under gunicorn on the project's emulators."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _descendants(pid: int) -> set[int]:
    """Every live process whose parent chain reaches *pid* (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_demo_runs_and_reports_nothing_lost() -> None:
    """The demo exits 0 with one client per kind per worker, nothing built in the master,
    and every order published, pulled, pushed back and stored."""
    done = subprocess.run(
        [sys.executable, "-m", "examples.demo"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "result                  : OK, nothing lost" in out
    assert "workers that served     : 2" in out or "workers that served     : 1" in out
    assert "clients built in master : publisher=0, storage=0, subscriber=0" in out
    assert "received by pull        : 40" in out and "received by push        : 40" in out
    for line in out.splitlines():
        if line.startswith("  clients built in pid"):
            assert "=2" not in line and "=3" not in line, line  # never more than one client per kind


def test_demo_interrupted_leaves_no_process_behind() -> None:
    """Ctrl-C (SIGINT) while orders are being placed: exit 130, emulators and gunicorn gone."""
    proc = subprocess.Popen([sys.executable, "-m", "examples.demo"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    children: set[int] = set()
    for line in proc.stdout:
        children |= _descendants(proc.pid)
        if line.startswith("gunicorn --preload"):
            children |= _descendants(proc.pid)
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stdout.read()
    proc.stdout.close()
    assert proc.wait(timeout=60) == 130, rest
    assert "interrupted" in rest
    assert children, "the demo started no child process"

    def living() -> list[int]:
        return [p for p in children if Path(f"/proc/{p}").exists()]

    wait_for(lambda: not living(), 5, interval=0.1)
    alive = living()
    zombies_only = all(
        (Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
        for p in alive
        if Path(f"/proc/{p}/stat").exists()
    )
    assert not alive or zombies_only, f"left behind: {alive}"
