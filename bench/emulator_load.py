"""Pub/Sub emulators under realistic load, side by side (used by bench/bench_emulator.py).

Four scenarios, each run against one emulator at a time, with the real
google-cloud-pubsub clients in their own processes (so the clients' GIL does
not throttle the emulator or each other):

1. :func:`mix` — publisher processes x threads each calling
   ``publish(...).result()`` in a loop (uncapped, or capped per thread),
   several streaming subscribers acking (and nacking 1 % of messages for ever,
   so they go to the dead-letter topic after 5 attempts). Measured: messages
   published and delivered per second, emulator CPU per delivered message,
   the emulator's largest RSS, and unacked messages over time (published and
   not poison, minus acked: backlog plus outstanding);
2. :func:`publish_latency` — median ``publish().result()`` latency on an idle
   topic, with nothing outstanding and with 20,000 messages leased to ten
   streams of another subscription;
3. :func:`open_streams` — the same latency with 1,000 StreamingPulls open
   (``grpc.aio`` clients in a child process);
4. :func:`drain` — a backlog of 10,000 x 8 KB drained by a stock
   ``SubscriberClient.subscribe()``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import emulator_workers as workers

PROJECT = "bench-project"
PAYLOAD = workers.PAYLOAD


# -- drivers ----------------------------------------------------------------------------------


@dataclass
class MixResult:
    published_per_s: float = 0.0
    delivered_per_s: float = 0.0
    cpu_ms_per_msg: float = 0.0
    rss_max_mb: float = 0.0
    publish_errors: int = 0
    unacked: list[int] = field(default_factory=list)  # at each 5 s mark


def _names(tag: str) -> tuple[str, str]:
    suffix = f"{tag}-{uuid.uuid4().hex[:8]}"
    return f"projects/{PROJECT}/topics/t-{suffix}", f"projects/{PROJECT}/subscriptions/s-{suffix}"


def _spawn(target: Callable[..., None], **kwargs: Any) -> mp.process.BaseProcess:
    proc = mp.get_context("spawn").Process(target=target, kwargs=kwargs, daemon=True)
    proc.start()
    return proc


def _collect(procs: list[mp.process.BaseProcess], out: Any, count: int, timeout: float) -> list[tuple[Any, ...]]:
    results = [out.get(timeout=timeout) for _ in range(count)]
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
    return results


def mix(host: str, pid: int, *, publishers: int, threads: int, subscribers: int, streams: int, seconds: float,
        rate: float, tree_cpu_s: Callable[[int], float], tree_rss_mb: Callable[[int], float]) -> MixResult:
    """The realistic mix (see the module docstring)."""
    workers.env(host)
    from google.cloud import pubsub_v1

    admin_pub, admin_sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic, sub = _names("mix")
    dlq, dlq_sub = _names("mix-dlq")
    try:
        admin_pub.create_topic(name=topic)
        admin_pub.create_topic(name=dlq)
        admin_sub.create_subscription(name=dlq_sub, topic=dlq)
        admin_sub.create_subscription(request={
            "name": sub, "topic": topic, "ack_deadline_seconds": 30,
            "dead_letter_policy": {"dead_letter_topic": dlq, "max_delivery_attempts": 5}})
    finally:
        admin_pub.stop()
        admin_pub.transport.close()
        admin_sub.close()
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [_spawn(workers.subscriber, host=host, sub=sub, streams=streams, seconds=seconds, ready=ready, go=go,
                    out=out) for _ in range(subscribers)]
    procs += [_spawn(workers.publisher, host=host, topic=topic, threads=threads, seconds=seconds, rate=rate,
                     tag=f"p{i}", ready=ready, go=go, out=out) for i in range(publishers)]
    for _ in procs:
        ready.get(timeout=120)
    time.sleep(1.0)  # streams opened, channels warm
    cpu0 = tree_cpu_s(pid)
    rss = tree_rss_mb(pid)
    go.set()
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        time.sleep(0.5)
        rss = max(rss, tree_rss_mb(pid))
    cpu = tree_cpu_s(pid) - cpu0
    results = _collect(procs, out, len(procs), timeout=120)
    published = sum(r[1] for r in results if r[0] == "pub")
    delivered = sum(r[1] for r in results if r[0] == "sub")
    pub_lines = [r[3] for r in results if r[0] == "pub"]
    sub_lines = [r[3] for r in results if r[0] == "sub"]
    unacked = []
    for mark in range(4, int(seconds), 5):  # every 5 s: published so far - acked so far
        p = sum(line[min(mark, len(line) - 1)] for line in pub_lines if line)
        a = sum(line[min(mark, len(line) - 1)] for line in sub_lines if line)
        unacked.append(max(0, p - a))
    return MixResult(
        published_per_s=published / seconds,
        delivered_per_s=delivered / seconds,
        cpu_ms_per_msg=cpu * 1000 / delivered if delivered else 0.0,
        rss_max_mb=rss,
        publish_errors=sum(r[2] for r in results if r[0] == "pub"),
        unacked=unacked,
    )


def _median_publish_ms(publisher: Any, topic: str, n: int, budget: float = 20.0, timeout: float = 5.0) -> float:
    """Median of up to *n* sequential ``publish().result()`` latencies, within *budget* seconds
    (a publish that times out counts as *timeout*)."""
    latencies = []
    stop_at = time.monotonic() + budget
    while len(latencies) < n and time.monotonic() < stop_at:
        t0 = time.perf_counter()
        try:
            publisher.publish(topic, b"x" * PAYLOAD).result(timeout=timeout)
        except Exception:  # counted as the timeout it waited
            latencies.append(timeout * 1000)
            continue
        latencies.append((time.perf_counter() - t0) * 1000)
    return statistics.median(latencies)


@dataclass
class LatencyResult:
    idle_ms: float = 0.0
    loaded_ms: float = 0.0
    load: int = 0  # leases held, or streams open


def publish_latency(host: str, *, leases: int = 20_000, streams: int = 10, samples: int = 300) -> LatencyResult:
    """Publish latency with nothing outstanding, then with *leases* messages leased to *streams* streams."""
    workers.env(host)
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=1))
    loader = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000,
                                                                                      max_latency=0.05))
    admin = pubsub_v1.SubscriberClient()
    idle_topic, idle_sub = _names("latency")
    held_topic, held_sub = _names("held")
    result = LatencyResult()
    try:
        publisher.create_topic(name=idle_topic)
        admin.create_subscription(name=idle_sub, topic=idle_topic)
        publisher.create_topic(name=held_topic)
        admin.create_subscription(name=held_sub, topic=held_topic, ack_deadline_seconds=600)
        _median_publish_ms(publisher, idle_topic, 300, budget=5)  # warm up (the JVM's JIT too)
        result.idle_ms = _median_publish_ms(publisher, idle_topic, samples)
        futures = [loader.publish(held_topic, b"h" * PAYLOAD) for _ in range(leases)]
        for f in futures:
            f.result(timeout=120)
        ctx = mp.get_context("spawn")
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        proc = _spawn(workers.holder, host=host, sub=held_sub, streams=streams, per_stream=leases // streams,
                      ready=ready, go=go, out=out)
        result.load = out.get(timeout=180)[1]
        ready.get(timeout=30)
        result.loaded_ms = _median_publish_ms(publisher, idle_topic, samples)
        go.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    finally:
        for c in (publisher, loader):
            c.stop()
            c.transport.close()
        admin.close()
    return result


def open_streams(host: str, *, subscriptions: int = 10, per_sub: int = 100, samples: int = 200) -> LatencyResult:
    """Publish latency with no stream open, then with ``subscriptions * per_sub`` StreamingPulls open."""
    workers.env(host)
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=1))
    admin = pubsub_v1.SubscriberClient()
    topic, _ = _names("streams-latency")
    stream_topic, _ = _names("streams")
    subs = [_names(f"streams-{i}")[1] for i in range(subscriptions)]
    result = LatencyResult()
    try:
        publisher.create_topic(name=topic)
        publisher.create_topic(name=stream_topic)
        for s in subs:
            admin.create_subscription(name=s, topic=stream_topic)
        _median_publish_ms(publisher, topic, 300, budget=5)  # warm up
        result.idle_ms = _median_publish_ms(publisher, topic, samples)
        ctx = mp.get_context("spawn")
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        proc = _spawn(workers.streams, host=host, subs=subs, per_sub=per_sub, ready=ready, go=go, out=out)
        result.load = out.get(timeout=120)[1]
        ready.get(timeout=30)
        result.loaded_ms = _median_publish_ms(publisher, topic, samples)
        go.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    finally:
        publisher.stop()
        publisher.transport.close()
        admin.close()
    return result


@dataclass
class DrainResult:
    seconds: float = 0.0
    received: int = 0
    total: int = 0


def drain(host: str, *, count: int = 10_000, size: int = 8 * 1024, timeout: float = 60.0) -> DrainResult:
    """Drain a backlog of *count* x *size* bytes with a stock ``subscribe()`` (default flow control)."""
    workers.env(host)
    from google.cloud import pubsub_v1

    loader = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic, sub = _names("drain")
    result = DrainResult(total=count)
    try:
        loader.create_topic(name=topic)
        subscriber.create_subscription(name=sub, topic=topic, ack_deadline_seconds=60)
        payload = os.urandom(size)
        futures = [loader.publish(topic, payload, i=str(i)) for i in range(count)]
        for f in futures:
            f.result(timeout=120)
        seen: set[str] = set()
        lock = threading.Lock()
        done = threading.Event()

        def callback(message: Any) -> None:
            message.ack()
            with lock:
                seen.add(message.message_id)
                if len(seen) >= count:
                    done.set()

        t0 = time.perf_counter()
        future = subscriber.subscribe(sub, callback)
        done.wait(timeout)
        result.seconds = time.perf_counter() - t0
        result.received = len(seen)
        future.cancel()
        with contextlib.suppress(Exception):
            future.result(timeout=10)
    finally:
        loader.stop()
        loader.transport.close()
        subscriber.close()
    return result


# -- one emulator, every scenario; the report -------------------------------------------------

MIX_SECONDS = float(os.environ.get("BENCH_MIX_SECONDS", "20"))
UNCAPPED: dict[str, Any] = {"publishers": 4, "threads": 8, "subscribers": 2, "streams": 3, "rate": 0.0}
CAPPED: dict[str, Any] = {"publishers": 5, "threads": 10, "subscribers": 2, "streams": 5, "rate": 10.0}

TARGET_CPU_X = 0.5
TARGET_DELIVERED_X = 1.2
TARGET_LEASE_LATENCY_X = 1.5
TARGET_STREAMS_MS = 10.0


@dataclass
class LoadResult:
    kind: str
    mix: MixResult
    capped: MixResult
    latency: LatencyResult
    streams: LatencyResult
    drain: DrainResult


def measure_load(kind: str, start: Callable[[str], Any], tree_cpu_s: Callable[[int], float],
                 tree_rss_mb: Callable[[int], float], log: Callable[[str], None]) -> LoadResult:
    """Every scenario against one fresh emulator of *kind* (``start(kind)`` returns an EmulatorProcess)."""
    emulator = start(kind)
    try:
        host, pid = emulator.host, emulator.process.pid
        log(f"[{kind}] mix: {UNCAPPED['publishers']} publisher processes x {UNCAPPED['threads']} threads, "
            f"{UNCAPPED['subscribers']} x {UNCAPPED['streams']} streams, {MIX_SECONDS:g} s")
        uncapped = mix(host, pid, seconds=MIX_SECONDS, tree_cpu_s=tree_cpu_s, tree_rss_mb=tree_rss_mb, **UNCAPPED)
        log(f"[{kind}] mix capped at {CAPPED['rate']:g} msg/s per thread")
        capped = mix(host, pid, seconds=MIX_SECONDS, tree_cpu_s=tree_cpu_s, tree_rss_mb=tree_rss_mb, **CAPPED)
        log(f"[{kind}] publish latency with 0 / 20,000 leases")
        latency = publish_latency(host)
        log(f"[{kind}] publish latency with 0 / 1,000 open streams")
        streams = open_streams(host)
        log(f"[{kind}] drain 10,000 x 8 KB")
        drained = drain(host)
    finally:
        emulator.stop()
    return LoadResult(kind, uncapped, capped, latency, streams, drained)


def _median(rounds: list[LoadResult], get: Callable[[LoadResult], float]) -> float:
    return statistics.median(get(r) for r in rounds)


# (label, getter, format, target text, check on (ours, ours/official) or None)
_Row = tuple[str, Callable[[LoadResult], float], str, str, Callable[[float, float | None], bool] | None]
_ROWS: list[_Row] = [
    ("mix: published/s (higher better)", lambda r: r.mix.published_per_s, ",.0f", "–", None),
    ("mix: delivered/s (higher better)", lambda r: r.mix.delivered_per_s, ",.0f", f"≥ {TARGET_DELIVERED_X}x",
     lambda _, x: x is not None and x >= TARGET_DELIVERED_X),
    ("mix: emulator CPU per delivered message (ms, lower better)", lambda r: r.mix.cpu_ms_per_msg, ".3f",
     f"≤ {TARGET_CPU_X}x", lambda _, x: x is not None and x <= TARGET_CPU_X),
    ("mix: emulator RSS, largest (MB, lower better)", lambda r: r.mix.rss_max_mb, ".1f", "–", None),
    ("mix: unacked at the end (lower better)", lambda r: float(r.mix.unacked[-1] if r.mix.unacked else 0), ",.0f",
     "–", None),
    ("capped mix: published/s (higher better)", lambda r: r.capped.published_per_s, ",.0f", "–", None),
    ("capped mix: delivered/s (higher better)", lambda r: r.capped.delivered_per_s, ",.0f", "–", None),
    ("capped mix: emulator CPU per delivered message (ms, lower better)", lambda r: r.capped.cpu_ms_per_msg, ".3f",
     f"≤ {TARGET_CPU_X}x", lambda _, x: x is not None and x <= TARGET_CPU_X),
    ("capped mix: emulator RSS, largest (MB, lower better)", lambda r: r.capped.rss_max_mb, ".1f", "–", None),
    ("publish latency, nothing outstanding (ms)", lambda r: r.latency.idle_ms, ".2f", "–", None),
    ("publish latency, 20,000 leases on 10 streams (ms)", lambda r: r.latency.loaded_ms, ".2f", "–", None),
    ("publish latency: 20,000 leases / none (x, lower better)",
     lambda r: r.latency.loaded_ms / r.latency.idle_ms if r.latency.idle_ms else 0.0, ".2f",
     f"≤ {TARGET_LEASE_LATENCY_X}x (ours)", lambda v, _: v <= TARGET_LEASE_LATENCY_X),
    ("publish latency, 1,000 open StreamingPulls (ms)", lambda r: r.streams.loaded_ms, ".2f",
     f"≤ {TARGET_STREAMS_MS:g} ms (ours)", lambda v, _: v <= TARGET_STREAMS_MS),
    ("drain 10,000 x 8 KB, stock client (s, lower better)", lambda r: r.drain.seconds, ".2f", "all received (ours)",
     None),
]


def render_load(ours: list[LoadResult], official: list[LoadResult]) -> list[str]:
    """The load table: medians over the rounds, ratios of medians."""
    lines = [
        "### Under load",
        "",
        f"Mix = {UNCAPPED['publishers']} publisher processes x {UNCAPPED['threads']} threads, each "
        f"`publish(...).result()` in a loop, and {UNCAPPED['subscribers']} subscriber processes x "
        f"{UNCAPPED['streams']} `subscribe()` streams acking (1 % nacked for ever, dead-lettered after 5 attempts), "
        f"{MIX_SECONDS:g} s; capped mix = {CAPPED['publishers']} x {CAPPED['threads']} threads at "
        f"{CAPPED['rate']:g} msg/s each, {CAPPED['subscribers']} x {CAPPED['streams']} streams. "
        f"Median of {len(ours)} interleaved round(s); emulator CPU = its process tree's user + system time.",
        "",
        "| metric | ours | official | ours/official | target | status |",
        "|---|---:|---:|---:|---|---|",
    ]
    for label, get, fmt, target, check in _ROWS:
        mine = _median(ours, get)
        theirs = _median(official, get) if official else None
        ratio = mine / theirs if theirs else None
        if check is None:
            status = "–"
            if label.startswith("drain"):
                received = min(r.drain.received for r in ours)
                status = "met" if received == ours[0].drain.total else f"**MISSED** ({received:,} received)"
        elif theirs is None and "x" in target and "(ours)" not in target:
            status = "n/a"
        else:
            status = "met" if check(mine, ratio) else "**MISSED**"
        lines.append(f"| {label} | {mine:{fmt}} | {'–' if theirs is None else format(theirs, fmt)} | "
                     f"{'–' if ratio is None else f'{ratio:.2f}x'} | {target} | {status} |")
    lines.append("")
    for name, results in (("ours", ours), ("official", official)):
        for i, r in enumerate(results, 1):
            lines.append(
                f"- {name}, round {i}: mix {r.mix.delivered_per_s:,.0f} delivered/s at {r.mix.cpu_ms_per_msg:.3f} ms "
                f"CPU each, unacked every 5 s {' / '.join(f'{u:,}' for u in r.mix.unacked)}; capped "
                f"{r.capped.delivered_per_s:,.0f}/s at {r.capped.cpu_ms_per_msg:.3f} ms, unacked "
                f"{' / '.join(f'{u:,}' for u in r.capped.unacked)}; {r.latency.load:,} leases held; "
                f"{r.streams.load:,} streams open; drained {r.drain.received:,} of {r.drain.total:,} in "
                f"{r.drain.seconds:.2f} s.")
    return [*lines, ""]
