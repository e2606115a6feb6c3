"""End-to-end benchmarks: publish-and-confirm requests/s under gunicorn, and the shutdown flush.

Everything runs on this machine: the project's Pub/Sub emulator, gunicorn
(2 workers x 8 threads, ``--preload``) serving ``bench/app.py``, and the load
generator (``wrk`` when installed, else a Python one). They share the cores,
so absolute numbers are modest; the variants run back to back in one run
with the same setup, and the ratios compare like with like.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from google.api_core.exceptions import AlreadyExists

from cloudclients import ClientRegistry, Settings
from cloudclients.testing import EmulatorProcess, free_port, stop_process_group

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "bench-project"
WORKERS = 2
THREADS = 8
CONNECTIONS = 16
WARMUP = 2.0
ROUNDS = 5


@dataclass
class LoadResult:
    rps: float
    requests: int
    errors: int
    #: Requests/s of each round (when measured in rounds); ``rps`` is their median.
    rounds: list[float] = field(default_factory=list)


def load_tool() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def _wrk(url: str, seconds: float) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\n')
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "-s", script.name, url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return LoadResult(rps, total, errors)


def _python_load(url: str, seconds: float) -> LoadResult:
    """Keep-alive POSTs from CONNECTIONS threads (when wrk is missing; it is itself CPU-bound)."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    counts = [0, 0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run() -> None:
        done = bad = 0
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while time.monotonic() < stop:
            try:
                conn.request("POST", path, body=b"")
                resp = conn.getresponse()
                resp.read()
                done += 1
                bad += resp.status >= 300
            except OSError:
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.close()
        with lock:
            counts[0] += done
            counts[1] += bad

    threads = [threading.Thread(target=run) for _ in range(CONNECTIONS)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return LoadResult(counts[0] / (time.monotonic() - began), counts[0], counts[1])


def drive(url: str, seconds: float) -> LoadResult:
    return _wrk(url, seconds) if load_tool() == "wrk" else _python_load(url, seconds)


@contextmanager
def gunicorn(variant: str, env: Mapping[str, str]) -> Iterator[str]:
    """Serve bench/app.py with *variant*; yield the base URL; stop gracefully (SIGTERM) after."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "bench.app:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(WORKERS),
            "--threads",
            str(THREADS),
            "--worker-class",
            "gthread",
            "--preload",
            "--graceful-timeout",
            "20",
            "--log-level",
            "warning",
            "--backlog",
            "512",
        ],
        cwd=ROOT,
        env={**env, "BENCH_VARIANT": variant, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn ({variant}) exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                urllib.request.urlopen(base + "/ready", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield base
    finally:
        stop_process_group(proc, 30)
        proc.stderr.close()  # type: ignore[union-attr]


def requests_per_second(
    pubsub: EmulatorProcess, variants: list[str], seconds: float, rounds: int = ROUNDS
) -> dict[str, LoadResult]:
    """Serve every variant at once, then measure them in turns, *rounds* times.

    This machine's speed drifts by tens of percent from one minute to the
    next (a shared VM): interleaving the variants and taking each one's median
    round keeps the drift out of the ratios. Idle servers cost nothing.
    """
    topic = f"projects/{PROJECT}/topics/bench-rps"
    env = {**os.environ, **pubsub.env, "GOOGLE_CLOUD_PROJECT": PROJECT, "BENCH_TOPIC": topic}
    admin = ClientRegistry.from_settings(Settings.from_mapping({}, env), name="bench-admin")
    try:
        with contextlib.suppress(AlreadyExists):
            admin.publisher.create_topic(name=topic)
    finally:
        admin.close(timeout=5)
    runs: dict[str, list[LoadResult]] = {v: [] for v in variants}
    with contextlib.ExitStack() as stack:
        bases = {v: stack.enter_context(gunicorn(v, env)) for v in variants}
        for variant in variants:
            drive(bases[variant] + "/publish", WARMUP)  # clients built, code paths warm
        for round_ in range(rounds):
            for variant in variants:
                runs[variant].append(drive(bases[variant] + "/publish", seconds))
            line = "  ".join(f"{v} {runs[v][-1].rps:.0f}" for v in variants)
            print(f"  round {round_ + 1}/{rounds}: {line} req/s", file=sys.stderr, flush=True)
    results = {}
    for variant, measured in runs.items():
        ordered = sorted(measured, key=lambda r: r.rps)
        median = ordered[len(ordered) // 2]
        results[variant] = LoadResult(
            median.rps, sum(r.requests for r in measured), sum(r.errors for r in measured), [r.rps for r in measured]
        )
    return results


@dataclass
class FlushResult:
    queued: int
    outstanding_at_close: int
    close_seconds: float
    received: int


def shutdown_flush(pubsub: EmulatorProcess, count: int = 10_000) -> FlushResult:
    """Publish *count* messages as fast as possible, close at once, time it, then count arrivals."""
    env = {**os.environ, **pubsub.env, "GOOGLE_CLOUD_PROJECT": PROJECT}
    settings = Settings.from_mapping({}, env)
    suffix = uuid.uuid4().hex[:8]
    topic = f"projects/{PROJECT}/topics/bench-flush-{suffix}"
    sub = f"projects/{PROJECT}/subscriptions/bench-flush-{suffix}"
    admin = ClientRegistry.from_settings(settings, name="bench-flush-admin")
    admin.publisher.create_topic(name=topic)
    admin.subscriber.create_subscription(request={"name": sub, "topic": topic, "ack_deadline_seconds": 60})

    registry = ClientRegistry.from_settings(settings, name="bench-flush")
    publisher = registry.publisher
    for i in range(count):
        publisher.publish(topic, b"%06d" % i)
    outstanding = registry.stats()["clients"]["publisher"]["metrics"].get("outstanding", -1)
    began = time.perf_counter()
    registry.close(timeout=30)
    close_seconds = time.perf_counter() - began

    seen: set[bytes] = set()
    deadline = time.monotonic() + 60
    while len(seen) < count and time.monotonic() < deadline:
        resp = admin.subscriber.pull(request={"subscription": sub, "max_messages": 1000}, timeout=10)
        if not resp.received_messages:
            continue
        seen.update(m.message.data for m in resp.received_messages)
        admin.subscriber.acknowledge(
            request={"subscription": sub, "ack_ids": [m.ack_id for m in resp.received_messages]}
        )
    admin.close(timeout=5)
    return FlushResult(count, outstanding, close_seconds, len(seen))
