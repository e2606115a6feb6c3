"""Load and serve the ports of Google's samples (examples/samples/) the way their users do: settings
in the environment, the module imported (it builds its app at import, as the samples do), gunicorn on
loopback. Public cloudclients names only — these tests are what a user of the library would write."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from cloudclients import CloudClients
from cloudclients.testing import free_port

ROOT = Path(__file__).resolve().parent.parent


def module_name(port: str) -> str:
    return f"examples.samples.{port}.main"


@contextlib.contextmanager
def imported(port: str) -> Iterator[ModuleType]:
    """Import ``examples.samples.<port>.main`` afresh (reading the current environment), and close
    its clients afterwards."""
    name = module_name(port)
    sys.modules.pop(name, None)
    module = importlib.import_module(name)
    try:
        yield module
    finally:
        CloudClients.get_registry(module.app).close(timeout=5)
        sys.modules.pop(name, None)


@dataclass
class Served:
    """A gunicorn serving a port."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def gunicorn(port: str, env: dict[str, str], *args: str) -> Iterator[Served]:
    """Serve the port with ``gunicorn <args>`` on a free loopback port until the block exits
    (SIGTERM to the whole process group, SIGKILL after 15 s)."""
    http_port = free_port()
    with tempfile.TemporaryDirectory(prefix=f"{port}-") as tmp:
        log_path = Path(tmp) / "gunicorn.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{http_port}", "--graceful-timeout", "10",
                 *args, f"{module_name(port)}:app"],
                cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        served = Served(process, f"http://127.0.0.1:{http_port}", log_path)
        try:
            _wait_listening(served, http_port)
            yield served
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def _wait_listening(served: Served, http_port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {served.process.returncode}:\n{served.log()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", http_port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn not listening in {timeout} s:\n{served.log()}")
