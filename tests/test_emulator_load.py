"""cloudclients-emulator under load: bounded responses, leases that cost nothing to publishers, many
open streams, memory caps over everything held, push flow control, bounded shutdown.

Each test starts its own emulator process and drives it with the real google-cloud-pubsub clients
(a *stock* client where the point is the client's defaults: gRPC's 4 MiB receive limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http import server as http_server
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.pubsub_v1 import PublisherClient as GapicPublisher
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
from google.pubsub_v1.types import StreamingPullRequest, StreamingPullResponse

from tests.emulator_proc import PROJECT, cpu_seconds, emulator, http, registry, topic_and_subscription
from tests.helpers import wait_for

pytest.importorskip("cloudclients_emulator", reason="the emulator package (pip install -e emulator/) is needed")

pytestmark = pytest.mark.slow

PUSH_MAX_IN_FLIGHT = 4  # per push subscription (emulator/README.md)


@pytest.fixture
def stock_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point stock clients (``pubsub_v1.PublisherClient()``) at an emulator, as users do."""

    def point(env: dict[str, str]) -> None:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", env["PUBSUB_EMULATOR_HOST"])

    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    return point


def publish_raw(reg: Any, topic: str, messages: list[dict[str, Any]]) -> list[str]:
    """One Publish RPC with exactly these messages (no client batching, no retry)."""
    response = GapicPublisher.publish(reg.publisher, request={"topic": topic, "messages": messages}, retry=None,
                                      timeout=30)
    return list(response.message_ids)


class Held:
    """A subscribe() callback that keeps every message unacked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[Any] = []

    def __call__(self, message: Any) -> None:
        with self.lock:
            self.messages.append(message)

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def wait(self, count: int, timeout: float) -> int:
        wait_for(lambda: self.count() >= count, timeout, interval=0.05)
        return self.count()


# -- responses bounded by bytes ----------------------------------------------------------------


def test_a_stock_client_drains_a_backlog_of_8_kb_messages(stock_env: Any) -> None:
    """1,000 x 8 KB waiting: a stock subscribe() (4 MiB receive limit) gets every one, because no
    response carries more than about 1 MiB."""
    with emulator() as (_, env):
        reg = registry(env)
        stock_env(env)
        subscriber = pubsub_v1.SubscriberClient()
        try:
            topic, sub = topic_and_subscription(reg, "big-backlog", ack_deadline_seconds=60)
            payload = os.urandom(8 * 1024)
            for _ in range(10):
                publish_raw(reg, topic, [{"data": payload} for _ in range(100)])
            seen: set[str] = set()
            done = threading.Event()

            def callback(message: Any) -> None:
                message.ack()
                seen.add(message.message_id)
                if len(seen) >= 1000:
                    done.set()

            future = subscriber.subscribe(sub, callback)
            try:
                done.wait(30)
            finally:
                future.cancel()
                with contextlib.suppress(Exception):
                    future.result(timeout=10)
            assert len(seen) == 1000, f"{len(seen)} of 1000 received"
        finally:
            subscriber.close()
            reg.close(timeout=5)


def test_a_large_pull_stays_under_the_clients_receive_limit(stock_env: Any) -> None:
    """Pull(max_messages=1000) over 1,000 x 8 KB answers a response a stock client accepts
    (well under 4 MiB), and repeated pulls get them all."""
    with emulator() as (_, env):
        reg = registry(env)
        stock_env(env)
        subscriber = pubsub_v1.SubscriberClient()
        try:
            topic, sub = topic_and_subscription(reg, "big-pull", ack_deadline_seconds=60)
            payload = os.urandom(8 * 1024)
            for _ in range(10):
                publish_raw(reg, topic, [{"data": payload} for _ in range(100)])
            got: set[str] = set()
            largest = 0
            deadline = time.monotonic() + 30
            while len(got) < 1000 and time.monotonic() < deadline:
                response = subscriber.pull(subscription=sub, max_messages=1000, timeout=10, retry=None)
                largest = max(largest, response._pb.ByteSize())
                got.update(m.message.message_id for m in response.received_messages)
            assert len(got) == 1000
            assert largest <= 2 * 1024 * 1024
        finally:
            subscriber.close()
            reg.close(timeout=5)


def test_messages_near_the_10_mb_limit_come_one_per_response() -> None:
    """Three legal 9 MB messages: each is delivered alone (Pull and StreamingPull), to a client
    whose channel accepts large messages."""
    with emulator() as (_, env):
        reg = registry(env)
        channel = grpc.insecure_channel(env["PUBSUB_EMULATOR_HOST"],
                                        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        subscriber = pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
        try:
            topic, sub = topic_and_subscription(reg, "nine-mb", ack_deadline_seconds=60)
            for i in range(3):
                publish_raw(reg, topic, [{"data": bytes([i]) * (9 * 1000 * 1000)}])
            first = subscriber.pull(subscription=sub, max_messages=10, timeout=30, retry=None)
            assert len(first.received_messages) == 1
            held = Held()
            future = subscriber.subscribe(sub, held)
            try:
                assert held.wait(2, 30) == 2
            finally:
                future.cancel()
                with contextlib.suppress(Exception):
                    future.result(timeout=10)
            data = {first.received_messages[0].message.data[:1]} | {m.data[:1] for m in held.messages}
            assert data == {b"\x00", b"\x01", b"\x02"}
        finally:
            subscriber.close()
            channel.close()
            reg.close(timeout=5)


# -- leases and streams cost publishers nothing -------------------------------------------------


def _publish_cpu(pid: int, reg: Any, topic: str, count: int) -> float:
    before = cpu_seconds(pid)
    for _ in range(count):
        publish_raw(reg, topic, [{"data": b"x" * 100}])
    return cpu_seconds(pid) - before


def test_publish_costs_the_same_with_10000_leases_outstanding() -> None:
    """Publishing to one topic while five streams of another subscription hold 10,000 unacked
    messages uses about the same emulator CPU as with nothing outstanding (it used to wake every
    stream and scan every lease on each publish: ~25x)."""
    with emulator() as (proc, env):
        reg = registry(env)
        try:
            topic, _ = topic_and_subscription(reg, "latency")
            held_topic, held_sub = topic_and_subscription(reg, "held", ack_deadline_seconds=600)
            _publish_cpu(proc.pid, reg, topic, 100)  # warm up
            idle = min(_publish_cpu(proc.pid, reg, topic, 300) for _ in range(2))
            for _ in range(10):
                publish_raw(reg, held_topic, [{"data": b"h" * 100} for _ in range(1000)])
            held = Held()
            flow = pubsub_v1.types.FlowControl(max_messages=2000, max_lease_duration=3600)
            futures = [reg.subscriber.subscribe(held_sub, held, flow_control=flow) for _ in range(5)]
            try:
                assert held.wait(10_000, 60) == 10_000
                loaded = min(_publish_cpu(proc.pid, reg, topic, 300) for _ in range(2))
            finally:
                for f in futures:
                    f.cancel()
            print(f"emulator CPU for 300 publishes: {idle * 1000:.0f} ms idle, "
                  f"{loaded * 1000:.0f} ms with 10,000 leases")
            assert loaded < 3 * idle + 0.05
        finally:
            reg.close(timeout=5)


def _open_streams(host: str, subscription: str, count: int, opened: threading.Event,
                  stop: threading.Event) -> None:
    """Hold *count* StreamingPulls open (grpc.aio, one thread) until *stop* is set."""

    async def main() -> None:
        channel = grpc.aio.insecure_channel(host)
        method = channel.stream_stream("/google.pubsub.v1.Subscriber/StreamingPull",
                                       request_serializer=StreamingPullRequest.serialize,
                                       response_deserializer=StreamingPullResponse.deserialize)
        done = asyncio.Event()

        async def requests() -> Any:
            yield StreamingPullRequest(subscription=subscription, stream_ack_deadline_seconds=60)
            await done.wait()

        calls = [method(requests()) for _ in range(count)]
        await asyncio.sleep(2)
        opened.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        done.set()
        for call in calls:
            call.cancel()
        await channel.close()

    asyncio.run(main())


def test_unary_calls_answer_with_1200_streams_open() -> None:
    """1,200 open StreamingPulls on one channel (no thread each) leave Publish, GetTopic and the admin API
    answering; all 1,200 are counted as open (a stock client queues streams beyond the server's
    concurrent-stream limit, so that limit must stay above 1,000)."""
    with emulator() as (_, env):
        reg = registry(env)
        try:
            topic, sub = topic_and_subscription(reg, "many-streams")
            opened, stop = threading.Event(), threading.Event()
            holder = threading.Thread(target=_open_streams, args=(env["PUBSUB_EMULATOR_HOST"], sub, 1200, opened, stop),
                                      daemon=True)
            holder.start()
            try:
                assert opened.wait(30)
                for _ in range(20):
                    publish_raw(reg, topic, [{"data": b"x"}])  # 30 s timeout, no retry
                    reg.publisher.get_topic(topic=topic, timeout=5, retry=None)
                stats = http(f"http://{env['PUBSUB_EMULATOR_HOST']}/admin/stats")[1]
                assert stats["open_streams"] == 1200
            finally:
                stop.set()
                holder.join(30)
        finally:
            reg.close(timeout=5)


# -- memory caps ------------------------------------------------------------------------------------


def _pull_and_ack(reg: Any, sub: str, want: int) -> None:
    got = 0
    deadline = time.monotonic() + 30
    while got < want and time.monotonic() < deadline:
        response = reg.subscriber.pull(subscription=sub, max_messages=100, timeout=10, retry=None)
        if response.received_messages:
            reg.subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in response.received_messages])
            got += len(response.received_messages)
    assert got == want


def test_retained_acked_messages_count_against_the_cap() -> None:
    """With retain_acked_messages and a 1 MB cap, 3 MB published and acked: what is kept for seek is
    counted (stats) and bounded by the cap, oldest dropped first; publishing goes on; deleting the
    subscription frees it all."""
    cap = 1_000_000
    with emulator("--max-bytes-per-subscription", str(cap)) as (_, env):
        base = f"http://{env['PUBSUB_EMULATOR_HOST']}"
        reg = registry(env)
        try:
            topic, sub = topic_and_subscription(reg, "retained", retain_acked_messages=True)
            for _ in range(30):
                publish_raw(reg, topic, [{"data": os.urandom(10_000)} for _ in range(10)])
                _pull_and_ack(reg, sub, 10)
            held = http(base + "/admin/stats")[1]["subscriptions"][sub]
            assert 0.8 * cap < held["bytes"] <= cap
            assert held["backlog"] == held["outstanding"] == 0
            assert held["retained"] == held["messages"] > 50
            reg.subscriber.delete_subscription(subscription=sub)
            stats = http(base + "/admin/stats")[1]
            assert stats["subscriptions"] == {} and stats["held"] == {"messages": 0, "bytes": 0}
        finally:
            reg.close(timeout=5)


def test_a_snapshot_counts_against_the_cap_until_deleted() -> None:
    """A snapshot keeps everything published after it: with a 1 MB cap, Publish is refused with
    RESOURCE_EXHAUSTED naming the snapshot (even though the subscription acks everything); deleting
    the snapshot frees it and publishing works again."""
    cap = 1_000_000
    with emulator("--max-bytes-per-subscription", str(cap)) as (_, env):
        base = f"http://{env['PUBSUB_EMULATOR_HOST']}"
        reg = registry(env)
        try:
            topic, sub = topic_and_subscription(reg, "snapshotted")
            snapshot = f"projects/{PROJECT}/snapshots/snapshotted"
            reg.subscriber.create_snapshot(name=snapshot, subscription=sub)
            refused = None
            for _ in range(30):
                try:
                    publish_raw(reg, topic, [{"data": os.urandom(10_000)} for _ in range(10)])
                except gexc.ResourceExhausted as exc:
                    refused = exc
                    break
                _pull_and_ack(reg, sub, 10)
            assert refused is not None and "snapshot" in str(refused) and snapshot in str(refused)
            stats = http(base + "/admin/stats")[1]
            assert 0.8 * cap < stats["snapshots"][snapshot]["bytes"] <= cap
            assert stats["subscriptions"][sub]["messages"] == 0
            reg.subscriber.delete_snapshot(snapshot=snapshot)
            stats = http(base + "/admin/stats")[1]
            assert stats["snapshots"] == {} and stats["held"] == {"messages": 0, "bytes": 0}
            publish_raw(reg, topic, [{"data": os.urandom(10_000)} for _ in range(10)])
        finally:
            reg.close(timeout=5)


def test_a_refused_publish_evicts_nothing() -> None:
    """Two subscriptions at a 10-message cap: one holds 10 acked messages kept for seek (which a Publish may
    evict), the other a backlog of 10 (which it may not). A Publish is refused with RESOURCE_EXHAUSTED
    naming the second, and the first still has all 10 retained (they used to be evicted for a publish
    that then failed)."""
    with emulator("--max-messages-per-subscription", "10") as (_, env):
        base = f"http://{env['PUBSUB_EMULATOR_HOST']}"
        reg = registry(env)
        try:
            topic, retaining = topic_and_subscription(reg, "evict-a", retain_acked_messages=True)
            backlogged = f"projects/{PROJECT}/subscriptions/evict-b"
            reg.subscriber.create_subscription(request={"name": backlogged, "topic": topic})
            publish_raw(reg, topic, [{"data": b"x"} for _ in range(10)])
            _pull_and_ack(reg, retaining, 10)
            assert http(base + "/admin/stats")[1]["subscriptions"][retaining]["retained"] == 10
            with pytest.raises(gexc.ResourceExhausted, match="evict-b"):
                publish_raw(reg, topic, [{"data": b"y"}])
            stats = http(base + "/admin/stats")[1]["subscriptions"]
            assert stats[retaining]["retained"] == 10, "retained messages evicted for a refused publish"
            assert stats[backlogged]["backlog"] == 10
        finally:
            reg.close(timeout=5)


# -- push flow control -------------------------------------------------------------------------------


class PushEndpoint(http_server.BaseHTTPRequestHandler):
    """Records each POST; requests that come in the first 2 s hang `stall_s` seconds, then fail (500)."""

    lock: threading.Lock
    log: list[tuple[str, float, float, int]]  # (message id, started, answered, status)
    first: list[float]  # when the first request came
    stall_s: float

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        message_id = body["message"]["messageId"]
        started = time.monotonic()
        with self.lock:
            if not self.first:
                self.first.append(started)
        stalled = started - self.first[0] < 2.0
        if stalled:
            time.sleep(self.stall_s)
        status = 500 if stalled else 204
        with self.lock:
            self.log.append((message_id, started, time.monotonic(), status))
        with contextlib.suppress(OSError):
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def push_endpoint(stall_s: float) -> Iterator[tuple[str, type[PushEndpoint]]]:
    handler = type("Endpoint", (PushEndpoint,), {"lock": threading.Lock(), "log": [], "first": [],
                                                 "stall_s": stall_s})
    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/push", handler
    finally:
        server.shutdown()
        server.server_close()


def test_push_has_flow_control_and_never_reposts_an_acked_message() -> None:
    """A push endpoint whose first requests hang past the ack deadline: at most 4 POSTs are in
    flight (emulator/README.md), the rest wait unleased (no lease runs out in a queue), and no
    message is POSTed again once the endpoint answered 2xx for it; all 40 are acknowledged."""
    with push_endpoint(stall_s=11) as (url, endpoint), emulator() as (_, env):
        reg = registry(env)
        try:
            topic, _ = topic_and_subscription(reg, "pushed", ack_deadline_seconds=10,
                                              push_config={"push_endpoint": url})
            publish_raw(reg, topic, [{"data": f"m{i}".encode()} for i in range(40)])
            def all_acknowledged() -> bool:
                with endpoint.lock:
                    return len({m for m, _, _, status in endpoint.log if status == 204}) >= 40

            wait_for(all_acknowledged, 60, interval=0.1)
            time.sleep(1.5)  # anything POSTed again would show by now
            with endpoint.lock:
                log = sorted(endpoint.log, key=lambda entry: entry[1])
        finally:
            reg.close(timeout=5)
    # In flight from the emulator's side: it gives up on a POST at the 10 s ack deadline (the
    # stalled handlers here answer later, to nobody), so a stalled POST counts for 9.5 s.
    spans = [(started, min(answered, started + 9.5)) for _, started, answered, _ in log]
    most = max(sum(1 for s, e in spans if s <= at < e) for at, _ in spans)
    acked_at: dict[str, float] = {}
    for message_id, _, answered, status in log:
        if status == 204:
            acked_at.setdefault(message_id, answered)
    reposted = {m for m, started, _, _ in log if m in acked_at and started > acked_at[m]}
    assert not reposted, f"{len(reposted)} messages POSTed again after a 2xx"
    assert most <= PUSH_MAX_IN_FLIGHT, f"{most} POSTs in flight at once"
    assert len(acked_at) == 40


# -- bounded shutdown ---------------------------------------------------------------------------------


def _exit_seconds(proc: Any) -> float:
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    returncode = proc.wait(timeout=30)
    assert returncode == 0
    return time.monotonic() - began


def test_sigterm_exits_within_2_s_while_a_push_endpoint_hangs() -> None:
    """A push endpoint that accepts and never answers does not hold the emulator up at SIGTERM."""
    with socket.create_server(("127.0.0.1", 0)) as hanging:
        url = f"http://127.0.0.1:{hanging.getsockname()[1]}/push"
        with emulator() as (proc, env):
            reg = registry(env)
            try:
                topic, _ = topic_and_subscription(reg, "hang", push_config={"push_endpoint": url})
                publish_raw(reg, topic, [{"data": f"m{i}".encode()} for i in range(20)])
                hanging.settimeout(10)
                accepted, _ = hanging.accept()  # a POST is in flight
            finally:
                reg.close(timeout=5)
            try:
                assert _exit_seconds(proc) <= 3.0
            finally:
                accepted.close()


def test_sigterm_exits_within_2_s_while_a_delayed_call_is_in_flight() -> None:
    """An injected 30 s delay on a call in flight: SIGTERM still exits at once, and the caller gets
    an error rather than waiting out its deadline."""
    with emulator() as (proc, env):
        reg = registry(env)
        try:
            topic, _ = topic_and_subscription(reg, "slow")
            fault = {"method": "GetTopic", "count": 1, "status": "OK", "delay_ms": 30_000}
            assert http(f"http://{env['PUBSUB_EMULATOR_HOST']}/admin/faults", "POST", fault)[0] == 200
            outcome: list[BaseException | str] = []

            def call() -> None:
                try:
                    reg.publisher.get_topic(topic=topic, timeout=60, retry=None)
                    outcome.append("answered")
                except Exception as exc:  # the expected end: the emulator went away
                    outcome.append(exc)

            caller = threading.Thread(target=call, daemon=True)
            caller.start()
            time.sleep(0.5)
            assert _exit_seconds(proc) <= 3.0
            caller.join(10)
            assert outcome and isinstance(outcome[0], gexc.GoogleAPICallError), outcome
        finally:
            reg.close(timeout=5)
