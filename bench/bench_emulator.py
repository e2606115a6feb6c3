"""Side-by-side benchmark: this project's Pub/Sub emulator vs Google's official one.

Measured for each emulator, in one run, one emulator at a time (never both at
once, so they do not share the cores):

1. batched publish (msg/s): ``PublisherClient`` with default batching,
   ``PUBLISH_N`` x ``PAYLOAD`` -byte messages to a topic with one subscription,
   waiting for every future;
2. unbatched publish (msg/s): ``publish(...).result()`` one at a time,
   ``UNBATCHED_N`` messages (``max_messages=1`` so no batch latency is added:
   this is the request round trip);
3. streaming receive (msg/s): ``RECEIVE_N`` messages preloaded into a
   subscription, then ``SubscriberClient.subscribe()`` with an acking callback;
   timed from subscribe to the last distinct message received;
4. cold start (s): wall time from spawning the process (a raw ``Popen``, same
   polling for both) to the first successful gRPC call (``ListTopics``), best of
   ``COLD_STARTS`` fresh starts;
5. RSS (MB) of the emulator process tree (``VmRSS`` of the process and its
   descendants), idle right after start and after the throughput tests;
6. under load (bench/emulator_load.py): the realistic mix of publisher
   processes and streaming subscribers (uncapped and rate-capped), publish
   latency with 20,000 leases outstanding and with 1,000 open streams, and a
   stock client draining 10,000 x 8 KB, in ``BENCH_EMULATOR_ROUNDS`` (default
   2) interleaved rounds.

``BENCH_EMULATOR_PYTHONPATH`` runs "ours" from another checkout's emulator
(e.g. ``/path/to/main/emulator``) for a before/after comparison.

Every measurement uses a fresh topic/subscription. Run it directly
(``python bench/bench_emulator.py``) or call :func:`run` for the markdown.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import grpc
from google.cloud import pubsub_v1
from google.pubsub_v1 import ListTopicsRequest, ListTopicsResponse

from bench import emulator_load
from cloudclients.testing import EmulatorProcess, free_port, official_pubsub_emulator, start_pubsub_emulator

PROJECT = "bench-project"
PAYLOAD = 100
PUBLISH_N = 20_000
UNBATCHED_N = 1_000
RECEIVE_N = 20_000
COLD_STARTS = 5
FLOW_MAX_MESSAGES = 2_000
RECEIVE_TIMEOUT = 60.0
COLD_TIMEOUT = 60.0

#: Rounds of the load scenarios (bench/emulator_load.py), each emulator in turn.
LOAD_ROUNDS = int(os.environ.get("BENCH_EMULATOR_ROUNDS", "2"))

TARGET_STREAMING_X = 5.0
TARGET_BATCHED_X = 1.5
TARGET_COLD_S = 0.3
TARGET_RSS_MB = 80.0


@dataclass
class Result:
    kind: str
    batched: float = 0.0
    unbatched: float = 0.0
    receive: float = 0.0
    cold: float = 0.0
    rss_idle: float = 0.0
    rss_after: float = 0.0
    #: Emulator CPU (all its processes) per 1,000 messages, in ms.
    cpu_publish: float = 0.0
    cpu_receive: float = 0.0
    #: The benchmark client's own CPU time / wall time while it ran (1.0: one core flat out).
    client_publish: float = 0.0
    client_receive: float = 0.0
    notes: list[str] = field(default_factory=list)


# -- process helpers -------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of *pid* and its descendants."""
    kids = _children()
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo.extend(kids.get(p, []))
    return total


class _Cpu:
    """CPU used by the emulator tree and by this process over a block, with its wall time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> _Cpu:
        self.emulator = tree_cpu_s(self.pid)
        self.client = time.process_time()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.emulator = tree_cpu_s(self.pid) - self.emulator
        self.client = time.process_time() - self.client


def tree_rss_mb(pid: int) -> float:
    """Sum of VmRSS over *pid* and all its descendants, in MB."""
    tree = _children()
    todo, total_kb = [pid], 0
    while todo:
        p = todo.pop()
        todo.extend(tree.get(p, []))
        with contextlib.suppress(OSError), open(f"/proc/{p}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
    return total_kb / 1024


def _emulator_cmd(kind: str, port: int) -> list[str]:
    if kind == "cloudclients":
        return [sys.executable, "-m", "cloudclients_emulator", "--host-port", f"127.0.0.1:{port}", "--project", PROJECT]
    launcher = official_pubsub_emulator()
    assert launcher is not None
    return [launcher, "--host=127.0.0.1", f"--port={port}"]


def _emulator_env() -> dict[str, str]:
    """Extra environment for our emulator: ``BENCH_EMULATOR_PYTHONPATH`` benchmarks another checkout of it."""
    other = os.environ.get("BENCH_EMULATOR_PYTHONPATH")
    return {"PYTHONPATH": other} if other else {}


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PUBSUB_EMULATOR_HOST", None)
    env.pop("STORAGE_EMULATOR_HOST", None)
    return env


def _list_topics_ok(host: str) -> bool:
    """One ListTopics on a fresh channel (no reconnect backoff carried between attempts)."""
    channel = grpc.insecure_channel(host)
    try:
        call = channel.unary_unary(
            "/google.pubsub.v1.Publisher/ListTopics",
            request_serializer=ListTopicsRequest.serialize,
            response_deserializer=ListTopicsResponse.deserialize,
        )
        call(ListTopicsRequest(project=f"projects/{PROJECT}"), timeout=2.0)
        return True
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def cold_start_once(kind: str) -> float:
    """Seconds from Popen to the first successful gRPC call."""
    port = free_port()
    host = f"127.0.0.1:{port}"
    cmd = _emulator_cmd(kind, port)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**_clean_env(), **(_emulator_env() if kind == "cloudclients" else {})},
        start_new_session=True,
    )
    try:
        deadline = t0 + COLD_TIMEOUT
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} emulator exited with {proc.returncode}")
            # Cheap TCP probe first, then the real gRPC call: the same loop for both emulators.
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                time.sleep(0.005)
                continue
            if _list_topics_ok(host):
                return time.perf_counter() - t0
            time.sleep(0.005)
        raise RuntimeError(f"{kind} emulator not ready within {COLD_TIMEOUT:.0f} s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# -- throughput ------------------------------------------------------------------------


def _names(tag: str) -> tuple[str, str]:
    suffix = f"{tag}-{uuid.uuid4().hex[:8]}"
    return f"projects/{PROJECT}/topics/t-{suffix}", f"projects/{PROJECT}/subscriptions/s-{suffix}"


def _make_topic_sub(
    admin_pub: pubsub_v1.PublisherClient, admin_sub: pubsub_v1.SubscriberClient, tag: str
) -> tuple[str, str]:
    topic, sub = _names(tag)
    admin_pub.create_topic(name=topic)
    admin_sub.create_subscription(name=sub, topic=topic, ack_deadline_seconds=60)
    return topic, sub


def publish_batched(publisher: pubsub_v1.PublisherClient, topic: str, n: int) -> float:
    data = b"x" * PAYLOAD
    t0 = time.perf_counter()
    futures = [publisher.publish(topic, data) for _ in range(n)]
    for f in futures:
        f.result(timeout=120)
    return n / (time.perf_counter() - t0)


def publish_unbatched(publisher: pubsub_v1.PublisherClient, topic: str, n: int) -> float:
    data = b"x" * PAYLOAD
    publisher.publish(topic, data).result(timeout=30)  # warm the channel/batch thread
    t0 = time.perf_counter()
    for _ in range(n):
        publisher.publish(topic, data).result(timeout=30)
    return n / (time.perf_counter() - t0)


def streaming_receive(subscriber: pubsub_v1.SubscriberClient, sub: str, n: int) -> float:
    seen: set[str] = set()
    lock = threading.Lock()
    done = threading.Event()

    def callback(message: pubsub_v1.subscriber.message.Message) -> None:
        message.ack()
        with lock:
            seen.add(message.message_id)
            if len(seen) >= n:
                done.set()

    flow = pubsub_v1.types.FlowControl(max_messages=FLOW_MAX_MESSAGES, max_bytes=100 * 1024 * 1024)
    t0 = time.perf_counter()
    future = subscriber.subscribe(sub, callback=callback, flow_control=flow)
    finished = done.wait(RECEIVE_TIMEOUT)
    elapsed = time.perf_counter() - t0
    future.cancel()
    with contextlib.suppress(Exception):
        future.result(timeout=15)
    if not finished:
        raise RuntimeError(f"received only {len(seen)}/{n} messages in {RECEIVE_TIMEOUT:.0f} s")
    return n / elapsed


def _close(clients: list[object]) -> None:
    for c in clients:
        with contextlib.suppress(Exception):
            if isinstance(c, pubsub_v1.PublisherClient):
                c.stop()
                c.transport.close()
            else:
                c.close()  # type: ignore[attr-defined]


def measure(kind: str, log: Callable[[str], None]) -> Result:
    res = Result(kind)
    log(f"[{kind}] cold start x{COLD_STARTS}")
    res.cold = min(cold_start_once(kind) for _ in range(COLD_STARTS))

    emu = _start(kind)
    old_env = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = emu.host
    clients: list[object] = []
    try:
        time.sleep(0.5)  # let it settle before the idle reading
        res.rss_idle = tree_rss_mb(emu.process.pid)
        admin_pub = pubsub_v1.PublisherClient()
        admin_sub = pubsub_v1.SubscriberClient()
        clients += [admin_pub, admin_sub]

        log(f"[{kind}] batched publish {PUBLISH_N:,}")
        topic, _ = _make_topic_sub(admin_pub, admin_sub, "batched")
        batched = pubsub_v1.PublisherClient()
        clients.append(batched)
        with _Cpu(emu.process.pid) as cpu:
            res.batched = publish_batched(batched, topic, PUBLISH_N)
        res.cpu_publish = cpu.emulator * 1000 / PUBLISH_N * 1000
        res.client_publish = cpu.client / cpu.wall

        log(f"[{kind}] unbatched publish {UNBATCHED_N:,}")
        topic, _ = _make_topic_sub(admin_pub, admin_sub, "unbatched")
        single = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=1))
        clients.append(single)
        res.unbatched = publish_unbatched(single, topic, UNBATCHED_N)

        log(f"[{kind}] preload {RECEIVE_N:,} + streaming receive")
        topic, sub = _make_topic_sub(admin_pub, admin_sub, "receive")
        loader = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=0.05)
        )
        clients.append(loader)
        publish_batched(loader, topic, RECEIVE_N)
        subscriber = pubsub_v1.SubscriberClient()
        clients.append(subscriber)
        with _Cpu(emu.process.pid) as cpu:
            res.receive = streaming_receive(subscriber, sub, RECEIVE_N)
        res.cpu_receive = cpu.emulator * 1000 / RECEIVE_N * 1000
        res.client_receive = cpu.client / cpu.wall

        time.sleep(0.5)
        res.rss_after = tree_rss_mb(emu.process.pid)
    finally:
        _close(clients)
        if old_env is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = old_env
        emu.stop()
    return res


# -- report ----------------------------------------------------------------------------


def _ver(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _java_version() -> str:
    try:
        out = subprocess.run(["java", "-version"], check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "not found"
    first = (out.stderr or out.stdout).strip().splitlines()
    return first[0] if first else "?"


def _official_version() -> str:
    launcher = official_pubsub_emulator()
    if launcher is None:
        return "absent"
    lib = os.path.join(os.path.dirname(os.path.dirname(launcher)), "lib")
    with contextlib.suppress(OSError):
        for name in os.listdir(lib):
            if name.startswith("cloud-pubsub-emulator-") and name.endswith(".jar"):
                return name.removeprefix("cloud-pubsub-emulator-").removesuffix("-all.jar").removesuffix(".jar")
    return "?"


def render(ours: Result, official: Result | None) -> str:
    lines = [
        "## Pub/Sub emulator: cloudclients-emulator vs official (Java)",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}; "
        f"google-cloud-pubsub {_ver('google-cloud-pubsub')}, grpcio {_ver('grpcio')}, "
        f"cloudclients-emulator {_ver('cloudclients-emulator')}; official emulator {_official_version()}, "
        f"Java: {_java_version()}.",
        "",
        f"Workload: batched publish {PUBLISH_N:,} x {PAYLOAD} B (default batching); unbatched publish "
        f"{UNBATCHED_N:,} x `publish().result()`; streaming receive of {RECEIVE_N:,} preloaded messages "
        f"(flow control {FLOW_MAX_MESSAGES:,} messages, acking callback); cold start = spawn to first "
        f"successful ListTopics, best of {COLD_STARTS}; RSS = VmRSS of the process tree. "
        "One emulator at a time; numbers are noisy on a small shared machine.",
        "",
    ]
    # (label, attribute, format, target text, target check on (ours, ratio) or None)
    metrics: list[tuple[str, str, str, str, Callable[[float, float | None], bool] | None]] = [
        (
            "batched publish (msg/s, higher better)",
            "batched",
            ",.0f",
            f"≥ {TARGET_BATCHED_X}x",
            lambda _, r: r is not None and r >= TARGET_BATCHED_X,
        ),
        ("unbatched publish (msg/s, higher better)", "unbatched", ",.0f", "–", None),
        (
            "streaming receive (msg/s, higher better)",
            "receive",
            ",.0f",
            f"≥ {TARGET_STREAMING_X}x",
            lambda _, r: r is not None and r >= TARGET_STREAMING_X,
        ),
        ("cold start (s, lower better)", "cold", ".3f", f"≤ {TARGET_COLD_S} s (ours)", lambda v, _: v <= TARGET_COLD_S),
        ("emulator CPU per 1,000 batched publishes (ms, lower better)", "cpu_publish", ".0f", "–", None),
        ("emulator CPU per 1,000 streamed messages (ms, lower better)", "cpu_receive", ".0f", "–", None),
        ("RSS idle (MB, lower better)", "rss_idle", ".1f", "–", None),
        (
            "RSS after load (MB, lower better)",
            "rss_after",
            ".1f",
            f"≤ {TARGET_RSS_MB:.0f} MB (ours)",
            lambda v, _: v <= TARGET_RSS_MB,
        ),
    ]
    if official is None:
        lines += ["**Official emulator not installed: ours only (ratio targets cannot be checked).**", ""]
    lines += ["| metric | ours | official | ours/official | target | status |", "|---|---:|---:|---:|---|---|"]
    for label, attr, fmt, target, check in metrics:
        mine = getattr(ours, attr)
        theirs = getattr(official, attr) if official is not None else None
        ratio = mine / theirs if theirs else None
        status = "–" if check is None else ("n/a" if official is None and "x" in target else _ok(check(mine, ratio)))
        lines.append(
            f"| {label} | {mine:{fmt}} | {'–' if theirs is None else format(theirs, fmt)} | "
            f"{'–' if ratio is None else f'{ratio:.2f}x'} | {target} | {status} |"
        )
    if official is None:
        return "\n".join(lines) + "\n"
    o = official
    lines += [
        "",
        f"The Python client's own CPU while publishing: {ours.client_publish:.2f} (ours) and "
        f"{o.client_publish:.2f} (official) of a core; while receiving: {ours.client_receive:.2f} and "
        f"{o.client_receive:.2f}. Near 1.0 the client library, not the emulator, sets the pace "
        "(its thread holds the GIL): the emulator CPU rows show the emulators' own cost.",
    ]
    return "\n".join(lines) + "\n"


def _ok(met: bool) -> str:
    return "met" if met else "**MISSED**"


def _start(kind: str) -> EmulatorProcess:
    return start_pubsub_emulator(kind, project=PROJECT, extra_env=_emulator_env())  # type: ignore[arg-type]


def run(log: Callable[[str], None] | None = None) -> str:
    """Run the whole benchmark (≈ 6–10 minutes) and return a markdown section."""

    def _log(msg: str) -> None:
        if log is not None:
            log(msg)

    kinds = ["cloudclients", *(["official"] if official_pubsub_emulator() is not None else [])]
    ours = measure("cloudclients", _log)
    official = measure("official", _log) if len(kinds) > 1 else None
    loads: dict[str, list[emulator_load.LoadResult]] = {kind: [] for kind in kinds}
    for round_no in range(1, LOAD_ROUNDS + 1):  # interleaved: the machine drifts
        for kind in kinds:
            _log(f"load round {round_no}/{LOAD_ROUNDS}")
            loads[kind].append(emulator_load.measure_load(kind, _start, tree_cpu_s, tree_rss_mb, _log))
    return render(ours, official) + "\n" + "\n".join(
        emulator_load.render_load(loads["cloudclients"], loads.get("official", [])))


def main() -> int:
    t0 = time.perf_counter()
    print(run(log=lambda m: print(m, file=sys.stderr, flush=True)))
    print(f"(benchmark took {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
