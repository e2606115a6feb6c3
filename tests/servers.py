"""Start real WSGI servers for tests, on loopback, with bounded lifetimes."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudclients.testing import free_port, stop_process_group
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    """A running server process and its log (stdout and stderr)."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = 5000) -> str:
        """The last *chars* characters of :meth:`log`, for a failure message."""
        return self.log()[-chars:]


@contextlib.contextmanager
def gunicorn(args: Sequence[str], env: dict[str, str], app: str = "tests.apps.web:app",
             ready: str | None = "/stats") -> Iterator[Server]:
    """Run gunicorn with *args* serving *app* until the block exits (SIGTERM to the process
    group, SIGKILL after 30 s). It is ready once ``GET ready`` answers (the test apps' /stats),
    or with ``ready=None`` (an app without such a route) once its port accepts connections."""
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10",
           *args, app]
    with _serve(cmd, env, port, "gunicorn", ready) as server:
        yield server


@contextlib.contextmanager
def uwsgi(args: Sequence[str], env: dict[str, str], module: str = "tests.apps.web:app") -> Iterator[Server]:
    """Run uWSGI (from the venv, built by pip) serving *module* over HTTP until the block exits."""
    binary = Path(sys.executable).parent / "uwsgi"
    if not binary.exists():
        raise RuntimeError(f"{binary} not found: uWSGI is part of the dev extra; run `make install`.")
    port = free_port()
    cmd = [str(binary), "--http-socket", f"127.0.0.1:{port}", "--module", module, "--home", sys.prefix,
           "--need-app", "--die-on-term", "--disable-logging", *args]
    with _serve(cmd, env, port, "uwsgi", "/stats") as server:
        yield server


@contextlib.contextmanager
def _serve(cmd: list[str], env: dict[str, str], port: int, name: str, ready: str | None) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        log_path = Path(tmp) / f"{name}.log"
        with log_path.open("wb") as log:  # the child has its own descriptor
            process = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        server = Server(process, f"http://127.0.0.1:{port}", log_path)
        try:
            if not wait_for(lambda: _answers(server, name, port, ready), 30, interval=0.1):
                raise RuntimeError(f"{name} not ready in 30 s:\n{server.tail()}")
            yield server
        finally:
            stop_process_group(process, 30)


def _answers(server: Server, name: str, port: int, ready: str | None) -> bool:
    if server.process.poll() is not None:
        raise RuntimeError(f"{name} exited with {server.process.returncode}:\n{server.tail()}")
    with contextlib.suppress(OSError):
        if ready is None:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        else:
            urllib.request.urlopen(server.url + ready, timeout=2).read()
        return True
    return False


@dataclass
class Outcome:
    """One request made by :class:`Load`."""

    body: str
    status: int  # 0: no HTTP answer (connection refused or reset)
    started: float  # time.monotonic() when sent
    seconds: float
    reply: bytes = b""


class Load:
    """*threads* clients POSTing unique bodies to *url* in a loop until :meth:`stop`.

    Every request has a client-side timeout (*timeout*), so a hung server shows
    up as a slow outcome, never as a stuck test.
    """

    def __init__(self, url: str, threads: int = 8, timeout: float = 20.0, pause: float = 0.0) -> None:
        self.url, self.timeout, self.pause = url, timeout, pause
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)

    def _run(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            body = f"w{worker}-{n}"
            n += 1
            started = time.monotonic()
            status, reply = 0, b""
            try:
                req = urllib.request.Request(self.url, data=body.encode(), method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    status, reply = resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                status, reply = exc.code, exc.read()
            except (OSError, http.client.HTTPException):
                # Refused while the server restarts or stops; cut mid-answer by a SIGKILLed worker.
                time.sleep(0.02)
            with self._lock:
                self.outcomes.append(Outcome(body, status, started, time.monotonic() - started, reply))
            if self.pause:
                time.sleep(self.pause)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)
