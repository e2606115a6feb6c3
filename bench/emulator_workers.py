"""The client processes of bench/emulator_load.py (spawned: importable, picklable arguments).

Each builds its own google-cloud-pubsub clients from ``PUBSUB_EMULATOR_HOST``,
puts one item on *ready* when set up, waits for *go*, and reports on *out* as
``(kind, count, errors, timeline)``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import zlib
from typing import Any

PAYLOAD = 100
NACK_ONE_IN = 100
SAMPLE_EVERY = 1.0


def env(host: str) -> None:
    """Point this process's clients at *host* (and credential lookups at nothing)."""
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:9")
    os.environ.setdefault("GCE_METADATA_IP", "127.0.0.1:9")


def publisher(*, host: str, topic: str, threads: int, seconds: float, rate: float, tag: str,
                      ready: Any, go: Any, out: Any) -> None:
    env(host)
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()
    client.publish(topic, b"warm-up").result(timeout=60)
    counts = [0] * threads
    plain = [0] * threads  # not poison: each of these should be acked
    errors = [0] * threads
    timeline: list[int] = []
    ready.put(1)
    go.wait()
    start = time.monotonic()
    stop_at = start + seconds

    def run(i: int) -> None:
        n = 0
        next_at = start + (i / threads) / rate if rate else start
        while True:
            now = time.monotonic()
            if now >= stop_at:
                return
            if rate:
                if next_at > now:
                    time.sleep(min(next_at - now, stop_at - now))
                    continue
                next_at += 1 / rate
            data = f"{tag}-{i}-{n}".encode().ljust(PAYLOAD, b".")
            n += 1
            try:
                client.publish(topic, data).result(timeout=30)
                counts[i] += 1
                if zlib.crc32(data) % NACK_ONE_IN:
                    plain[i] += 1
            except Exception:  # a timeout or refusal: counted, the loop goes on
                errors[i] += 1

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    while time.monotonic() < stop_at:
        time.sleep(SAMPLE_EVERY)
        timeline.append(sum(plain))
    for w in workers:
        w.join(40)
    out.put(("pub", sum(counts), sum(errors), timeline))
    client.stop()


def subscriber(*, host: str, sub: str, streams: int, seconds: float, ready: Any, go: Any, out: Any) -> None:
    env(host)
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    acked: set[bytes] = set()
    lock = threading.Lock()

    def callback(message: Any) -> None:
        if zlib.crc32(message.data) % NACK_ONE_IN == 0:
            message.nack()  # poison: redelivered until dead-lettered
            return
        message.ack()
        with lock:
            acked.add(message.data)

    futures = [client.subscribe(sub, callback) for _ in range(streams)]
    ready.put(1)
    go.wait()
    timeline: list[int] = []
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        time.sleep(SAMPLE_EVERY)
        with lock:
            timeline.append(len(acked))
    with lock:
        total = len(acked)
    out.put(("sub", total, 0, timeline))
    for f in futures:
        f.cancel()
    for f in futures:
        with contextlib.suppress(Exception):
            f.result(timeout=10)
    client.close()


def holder(*, host: str, sub: str, streams: int, per_stream: int, ready: Any, go: Any, out: Any) -> None:
    """Take messages and hold them (never ack) until told to stop."""
    env(host)
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    held: list[Any] = []
    lock = threading.Lock()

    def callback(message: Any) -> None:
        with lock:
            held.append(message)

    flow = pubsub_v1.types.FlowControl(max_messages=per_stream, max_bytes=1 << 30, max_lease_duration=3600)
    futures = [client.subscribe(sub, callback, flow_control=flow) for _ in range(streams)]
    deadline = time.monotonic() + 90
    last, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:  # until all are held, or no more come for 5 s
        with lock:
            count = len(held)
        if count >= streams * per_stream:
            break
        if count != last:
            last, still_since = count, time.monotonic()
        elif time.monotonic() - still_since > 5:
            break
        time.sleep(0.1)
    with lock:
        out.put(("held", len(held), 0, []))
    ready.put(1)
    go.wait()
    for f in futures:
        f.cancel()
    for f in futures:
        with contextlib.suppress(Exception):
            f.result(timeout=10)
    client.close()


def streams(*, host: str, subs: list[str], per_sub: int, ready: Any, go: Any, out: Any) -> None:
    """Open ``len(subs) * per_sub`` StreamingPulls with grpc.aio and keep them open until told to stop."""
    import asyncio

    import grpc
    from google.pubsub_v1.types import StreamingPullRequest, StreamingPullResponse

    async def main() -> None:
        channels = [grpc.aio.insecure_channel(host) for _ in range(max(1, len(subs)))]
        stop = asyncio.Event()
        calls = []

        async def requests(sub: str) -> Any:
            yield StreamingPullRequest(subscription=sub, stream_ack_deadline_seconds=60)
            await stop.wait()

        for i, sub in enumerate(subs):
            method = channels[i].stream_stream(
                "/google.pubsub.v1.Subscriber/StreamingPull",
                request_serializer=StreamingPullRequest.serialize,
                response_deserializer=StreamingPullResponse.deserialize,
            )
            calls.extend(method(requests(sub)) for _ in range(per_sub))
        await asyncio.sleep(3)  # every stream opened and its first request taken
        alive = sum(1 for c in calls if not c.done())
        out.put(("streams", alive, 0, []))
        ready.put(1)
        while not go.is_set():
            await asyncio.sleep(0.05)
        stop.set()
        for c in calls:
            c.cancel()
        for ch in channels:
            await ch.close()

    asyncio.run(main())
