"""Start and stop local emulators as subprocesses (for tests, demos, CI).

Three kinds:

* ``cloudclients`` — this project's pure-Python Pub/Sub emulator
  (``python -m cloudclients_emulator``, installed from ``emulator/``);
* ``official`` — Google's Java Pub/Sub emulator, when the Cloud SDK component
  is installed (``google-cloud-cli-pubsub-emulator``);
* ``storage`` — the ``gcp-storage-emulator`` PyPI package.

Every process listens on 127.0.0.1 only, is started in its own session and is
asked to die with its parent (``setpriv --pdeathsig``), so a crashed test run
leaves nothing behind; :meth:`EmulatorProcess.stop` is idempotent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Literal

__all__ = [
    "EmulatorError",
    "EmulatorKind",
    "EmulatorNotInstalledError",
    "EmulatorProcess",
    "Emulators",
    "PubSubKind",
    "free_port",
    "official_pubsub_emulator",
    "pubsub_emulator_kinds",
    "start_emulators",
    "start_pubsub_emulator",
    "start_storage_emulator",
    "stop_process_group",
]

PubSubKind = Literal["cloudclients", "official"]

OFFICIAL_LAUNCHERS = (
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    "/usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
)

STARTUP_TIMEOUT = 60.0


class EmulatorError(RuntimeError):
    """An emulator did not start or did not become ready. The message is one line: which emulator,
    how it failed (exit code, or the time waited), its last line of output and its log file (kept)."""


class EmulatorNotInstalledError(EmulatorError):
    """The requested emulator is not installed on this machine."""


@dataclass
class EmulatorProcess:
    """A running emulator subprocess.

    :ivar kind: ``"cloudclients"``, ``"official"`` or ``"storage"``.
    :ivar host: what clients connect to (``HOST:PORT`` for Pub/Sub, a URL for Storage).
    :ivar env: environment variables that point clients at it.
    """

    kind: str
    host: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: str
    _log: IO[bytes] = field(repr=False)
    _stopped: bool = field(default=False, repr=False)
    # stdout lines copied into the log (for emulators whose stdout is read): not their stderr
    _copied: list[str] = field(default_factory=list, repr=False)

    @property
    def port(self) -> int:
        """The TCP port the emulator listens on."""
        return int(self.host.rsplit(":", 1)[1])

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last *lines* of the emulator's combined output (for error messages)."""
        with contextlib.suppress(OSError), open(self.log_path, "rb") as fh:
            return b"".join(fh.readlines()[-lines:]).decode("utf-8", "replace")
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the emulator (SIGTERM, then SIGKILL after *timeout*). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        stop_process_group(self.process, timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def official_pubsub_emulator() -> str | None:
    """Path of Google's Pub/Sub emulator launcher, or ``None`` if absent."""
    for path in OFFICIAL_LAUNCHERS:
        if os.access(path, os.X_OK) and shutil.which("java"):
            return path
    return None


def pubsub_emulator_kinds() -> list[PubSubKind]:
    """The Pub/Sub emulators available here, preferred first."""
    kinds: list[PubSubKind] = []
    if importlib.util.find_spec("cloudclients_emulator") is not None:
        kinds.append("cloudclients")
    if official_pubsub_emulator() is not None:
        kinds.append("official")
    return kinds


def start_pubsub_emulator(
    kind: PubSubKind | Literal["auto"] = "auto",
    *,
    project: str = "test-project",
    timeout: float = STARTUP_TIMEOUT,
    extra_env: Mapping[str, str] | None = None,
    port: int = 0,
) -> EmulatorProcess:
    """Start a Pub/Sub emulator on a loopback port and wait until it serves.

    :param kind: ``"auto"`` picks this project's emulator when installed, else
        the official one.
    :param port: ``0`` (default) picks a free port; a fixed port restarts an
        emulator where clients already point (state starts empty).
    :raises EmulatorError: if that emulator is not installed or not ready in time.
    """
    if kind == "auto":
        available = pubsub_emulator_kinds()
        if not available:
            raise EmulatorNotInstalledError(
                "No Pub/Sub emulator found: install this project's emulator "
                "(pip install -e emulator/) or Google's (google-cloud-cli-pubsub-emulator)."
            )
        kind = available[0]
    if kind == "cloudclients":
        if importlib.util.find_spec("cloudclients_emulator") is None:
            raise EmulatorNotInstalledError("cloudclients-emulator is not installed: pip install -e emulator/")
        cmd = [sys.executable, "-m", "cloudclients_emulator", "--host-port", f"127.0.0.1:{port}", "--project", project]
        proc = _spawn("cloudclients", cmd, extra_env)
        line = _wait_for_line(proc, "export PUBSUB_EMULATOR_HOST=", timeout)
        host = line.split("=", 1)[1].strip()
    elif kind == "official":
        launcher = official_pubsub_emulator()
        if launcher is None:
            raise EmulatorNotInstalledError(
                "Google's Pub/Sub emulator is not installed "
                "(Debian package google-cloud-cli-pubsub-emulator, and java)."
            )
        port = port or free_port()
        host = f"127.0.0.1:{port}"
        proc = _spawn("official", [launcher, "--host=127.0.0.1", f"--port={port}"], extra_env)
        _wait_http_ok(proc, f"http://{host}/", timeout)
    else:
        raise ValueError(f"kind={kind!r} is not a Pub/Sub emulator kind; use 'auto', 'cloudclients' or 'official'.")
    proc.host = host
    proc.env = {"PUBSUB_EMULATOR_HOST": host}
    return proc


def start_storage_emulator(*, timeout: float = STARTUP_TIMEOUT) -> EmulatorProcess:
    """Start ``gcp-storage-emulator`` (in memory) on a free loopback port.

    :raises EmulatorError: if it is not installed or not ready in time.
    """
    exe = shutil.which("gcp-storage-emulator", path=os.path.dirname(sys.executable)) or shutil.which(
        "gcp-storage-emulator"
    )
    if exe is None:
        raise EmulatorNotInstalledError("gcp-storage-emulator is not installed: pip install gcp-storage-emulator")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _spawn("storage", [exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"], None)
    _wait_http_ok(proc, f"{url}/storage/v1/b?project=ready-check", timeout, expect=None)
    proc.host = url
    proc.env = {"STORAGE_EMULATOR_HOST": url}
    return proc


# -- internals -----------------------------------------------------------------------


def _spawn(kind: str, cmd: list[str], extra_env: Mapping[str, str] | None) -> EmulatorProcess:
    env = dict(os.environ)
    # An emulator must not inherit emulator settings meant for its clients.
    for key in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"):
        env.pop(key, None)
    env.update(extra_env or {})
    if shutil.which("setpriv") and sys.platform.startswith("linux"):
        # Die with the test process even if it is SIGKILLed (no cleanup runs then).
        cmd = ["setpriv", "--pdeathsig", "TERM", *cmd]
    # Closed by EmulatorProcess.stop(), not here: the process writes to it.
    log = tempfile.NamedTemporaryFile(prefix=f"cloudclients-{kind}-", suffix=".log", delete=False)  # noqa: SIM115
    stdout: int | IO[bytes] = subprocess.PIPE if kind == "cloudclients" else log
    process = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=log, env=env, start_new_session=True
    )
    return EmulatorProcess(kind=kind, host="", env={}, process=process, log_path=log.name, _log=log)


_LABELS = {"cloudclients": "cloudclients-emulator (Pub/Sub)", "official": "Google's Pub/Sub emulator",
           "storage": "gcp-storage-emulator"}


def _start_failed(proc: EmulatorProcess, problem: str) -> EmulatorError:
    """Stop *proc*, keep its log, and say in one line which emulator failed, how, its last words and
    where the whole log is."""
    stop_process_group(proc.process, 5.0)
    proc._stopped = True
    if proc.process.stdout is not None:
        proc.process.stdout.close()
    with contextlib.suppress(ValueError):
        proc._log.flush()
    proc._log.close()
    lines = [line.strip() for line in proc.log_tail(200).splitlines() if line.strip()]
    for copied in proc._copied:  # the last words are on stderr: drop what the pump copied from stdout
        with contextlib.suppress(ValueError):
            lines.remove(copied)
    said = f": {lines[-1]}" if lines else " (no output)"
    label = _LABELS.get(proc.kind, proc.kind)
    return EmulatorError(f"{label} {problem}{said} (log: {proc.log_path})")


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _wait_for_line(proc: EmulatorProcess, prefix: str, timeout: float) -> str:
    """Read stdout until a line starts with *prefix*; keep draining it afterwards.

    :raises EmulatorError: one line, if the process ends first or *timeout* passes.
    """
    assert proc.process.stdout is not None
    stdout = proc.process.stdout
    found: list[str] = []
    ready = threading.Event()
    ended = threading.Event()

    def pump() -> None:
        # Copies every stdout line to the log; never lets the pipe fill up.
        for raw in iter(stdout.readline, b""):
            with contextlib.suppress(ValueError):
                proc._log.write(raw)
                proc._log.flush()
            text = raw.decode("utf-8", "replace").strip()
            if not ready.is_set():
                proc._copied.append(text)
            if not ready.is_set() and text.startswith(prefix):
                found.append(text)
                ready.set()
        ended.set()
        ready.set()

    threading.Thread(target=pump, name=f"cloudclients-{proc.kind}-stdout", daemon=True).start()
    ready.wait(timeout)
    if found:
        return found[0]
    if ended.is_set():  # stdout closed: the process is exiting
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.process.wait(10)
        raise _start_failed(proc, f"{_exit_status(proc.process.poll())} before it was ready")
    raise _start_failed(proc, f"did not print {prefix!r} within {timeout:.0f} s")


def _wait_http_ok(proc: EmulatorProcess, url: str, timeout: float, expect: str | None = "Ok") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise _start_failed(proc, f"{_exit_status(proc.process.returncode)} before it was ready")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            body = resp.read().decode("utf-8", "replace").strip()
            if expect is None or body == expect:
                return
        time.sleep(0.05)
    raise _start_failed(proc, f"was not ready at {url} within {timeout:.0f} s")


def stop_process_group(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM the process group led by *process*, SIGKILL it after *timeout*; wait for it.

    For children started with ``start_new_session=True`` (servers that fork
    workers): the whole group goes, not only the leader. Idempotent.
    """
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


# -- several emulators at once -------------------------------------------------------------

EmulatorKind = Literal["pubsub", "storage"]


@dataclass
class Emulators:
    """The emulators of a test session (or of one ``with start_emulators(...)`` block).

    :ivar pubsub: the Pub/Sub emulator, if started.
    :ivar storage: gcp-storage-emulator, if started.
    :ivar project: the project their clients should name.
    """

    pubsub: EmulatorProcess | None
    storage: EmulatorProcess | None
    project: str

    @property
    def env(self) -> dict[str, str]:
        """``PUBSUB_EMULATOR_HOST`` / ``STORAGE_EMULATOR_HOST`` for the running emulators."""
        return {**(self.pubsub.env if self.pubsub else {}), **(self.storage.env if self.storage else {})}

    def reset(self) -> float:
        """Drop every topic, subscription, snapshot, bucket and object; return the seconds it took.

        This project's emulator empties itself in one call (``POST /admin/reset``); Google's is
        emptied through its API (every resource of :attr:`project`); gcp-storage-emulator wipes
        itself (``GET /wipe``).
        """
        started = time.monotonic()
        if self.pubsub is not None:
            if self.pubsub.kind == "cloudclients":
                _http(f"http://{self.pubsub.host}/admin/reset", method="POST")
            else:
                _empty_pubsub(self.pubsub.host, self.project)
        if self.storage is not None:
            _http(f"{self.storage.host}/wipe")
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop every emulator. Idempotent."""
        for proc in (self.pubsub, self.storage):
            if proc is not None:
                proc.stop()

    def __enter__(self) -> Emulators:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_emulators(
    kinds: Iterable[EmulatorKind] = ("pubsub", "storage"),
    *,
    project: str = "test-project",
    pubsub_kind: PubSubKind | Literal["auto"] = "auto",
    timeout: float = STARTUP_TIMEOUT,
) -> Emulators:
    """Start the named emulators on free loopback ports; use as a context manager::

        with start_emulators(["pubsub", "storage"]) as emulators:
            os.environ.update(emulators.env)

    :param pubsub_kind: which Pub/Sub emulator (``auto`` prefers this project's).
    :raises EmulatorError: if one is not installed or does not start in time (any
        already started are stopped first).
    :raises ValueError: for an unknown kind.
    """
    wanted = list(dict.fromkeys(kinds))
    unknown = [k for k in wanted if k not in ("pubsub", "storage")]
    if unknown:
        raise ValueError(f"unknown emulator kind(s) {unknown}: use 'pubsub' and/or 'storage'")
    emulators = Emulators(pubsub=None, storage=None, project=project)
    try:
        if "pubsub" in wanted:
            emulators.pubsub = start_pubsub_emulator(pubsub_kind, project=project, timeout=timeout)
        if "storage" in wanted:
            emulators.storage = start_storage_emulator(timeout=timeout)
    except BaseException:
        emulators.stop()
        raise
    return emulators


def _http(url: str, method: str = "GET") -> None:
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _empty_pubsub(host: str, project: str) -> None:
    # Google's emulator has no reset: delete what the project holds, over REST (no client needed).
    base = f"http://{host}/v1/projects/{project}"
    for collection, key in (("subscriptions", "subscriptions"), ("snapshots", "snapshots"), ("topics", "topics")):
        with urllib.request.urlopen(f"{base}/{collection}?pageSize=1000", timeout=10) as response:
            listed = json.loads(response.read() or b"{}").get(key, [])
        for item in listed:
            name = item["name"] if isinstance(item, dict) else item
            with contextlib.suppress(urllib.error.HTTPError):
                _http(f"http://{host}/v1/{name}", method="DELETE")
