"""Start real WSGI servers for tests, on loopback, with bounded lifetimes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudclients._emulators import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    """A running server process."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: str

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")[-5000:]


@contextlib.contextmanager
def gunicorn(args: Sequence[str], env: dict[str, str], app: str = "tests.apps.web:app") -> Iterator[Server]:
    """Run gunicorn with *args* serving *app* until the block exits (SIGTERM, then SIGKILL)."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10",
           *args, app]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                            stdout=log, stderr=log, start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", log.name)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{server.log()}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(server.url + "/stats", timeout=2).read()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready in 30 s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
        os.unlink(log.name)
