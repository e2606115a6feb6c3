"""Start real WSGI servers for tests, on loopback, with bounded lifetimes."""

from __future__ import annotations

import contextlib
import http.client
import os
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
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10",
           *args, app]
    with _serve(cmd, env, port, "gunicorn") as server:
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
    with _serve(cmd, env, port, "uwsgi") as server:
        yield server


@contextlib.contextmanager
def _serve(cmd: list[str], env: dict[str, str], port: int, name: str) -> Iterator[Server]:
    log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                            stdout=log, stderr=log, start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", log.name)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.log()}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(server.url + "/stats", timeout=2).read()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready in 30 s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        stop_process_group(proc, 30)
        log.close()
        os.unlink(log.name)


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
            except (OSError, http.client.HTTPException):  # refused, reset, or cut off mid-answer (a killed worker)
                time.sleep(0.02)  # refused while the server restarts or stops
            with self._lock:
                self.outcomes.append(Outcome(body, status, started, time.monotonic() - started, reply))
            if self.pause:
                time.sleep(self.pause)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)
