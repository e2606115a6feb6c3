"""Fault tests with real processes: SIGTERM under load, a killed worker, an emulator outage.

Everything listens on 127.0.0.1, every wait is bounded, and every process is
stopped by the fixtures even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from urllib.parse import quote

import pytest

from cloudclients import ClientRegistry, Settings
from cloudclients.testing import TEST_PROJECT, TopicHandle, pull_messages, start_pubsub_emulator
from tests.helpers import wait_for
from tests.servers import Load, Outcome, gunicorn

pytestmark = [pytest.mark.slow, pytest.mark.fork]



def ok(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status == 200]


@pytest.mark.parametrize("run", range(5))
def test_sigterm_under_load_loses_no_acknowledged_publish(
    run: int, cloudclients_env: dict[str, str], pubsub_topic: TopicHandle
) -> None:
    """gunicorn --preload -w 4 under load gets SIGTERM. Responses do not wait for
    confirmation (after_response) and batches linger 0.5 s, so messages are still
    queued in the workers when the signal lands: every publish answered with a 2xx
    must be in the subscription anyway (flushed by the exit handlers)."""
    env = {
        **cloudclients_env,
        "CLOUDCLIENTS_PUBLISH_CONFIRM": "after_response",
        "CLOUDCLIENTS_BATCH_MAX_LATENCY": "0.5",
        "CLOUDCLIENTS_BATCH_MAX_MESSAGES": "1000",
    }
    with gunicorn(["--preload", "-w", "4", "--threads", "4"], env) as server, \
            Load(f"{server.url}/track?topic={quote(pubsub_topic.topic)}", threads=12) as load:
        assert wait_for(lambda: len(ok(load.snapshot())) >= 150, 20), "150 acknowledged publishes"
        signalled = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)
        returncode = server.process.wait(30)
        stopped = time.monotonic() - signalled
    acked = ok(load.outcomes)
    unconfirmed_at_response = sum(1 for o in acked if not json.loads(o.reply)["done"])
    messages = pubsub_topic.pull(expected=len(acked), timeout=30)
    found = {m.data.decode() for m in messages}
    missing = {o.body for o in acked} - found
    print(f"run {run}: {len(acked)} acknowledged ({unconfirmed_at_response} unconfirmed when answered), "
          f"{len(found)} found, {len(missing)} missing, gunicorn stopped in {stopped:.2f} s")
    assert returncode == 0
    assert unconfirmed_at_response > 0, "nothing was in flight: the test would not prove the flush"
    assert not missing, f"{len(missing)} acknowledged publishes lost: {sorted(missing)[:10]}"


def test_sigkilled_worker_is_replaced_with_fresh_clients(
    cloudclients_env: dict[str, str], pubsub_topic: TopicHandle
) -> None:
    """SIGKILL one of two workers: a replacement serves within 2 s, with its own publisher."""
    with gunicorn(["--preload", "-w", "2", "--threads", "2"], cloudclients_env) as server:
        with Load(f"{server.url}/publish?topic={quote(pubsub_topic.topic)}", threads=4) as load:

            def pids() -> set[int]:
                return {json.loads(o.reply)["pid"] for o in ok(load.snapshot())}

            assert wait_for(lambda: len(pids()) == 2, 20), "both workers to serve"
            before = pids()
            victim = min(before)
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            assert wait_for(lambda: len(pids() - before) > 0, 10), "a replacement worker to serve"
        replies = [(o, json.loads(o.reply)) for o in ok(load.outcomes)]
    new = [(o, r) for o, r in replies if r["pid"] not in before]
    first_served = min(o.started + o.seconds for o, _ in new) - killed
    print(f"worker {victim} killed; replacement {new[0][1]['pid']} served after {first_served:.2f} s")
    assert first_served <= 2.0
    for _, reply in new:
        publisher = reply["stats"]["clients"]["publisher"]
        assert publisher["constructions"] == 1, reply  # its own client, built in the new process
        assert reply["stats"]["forks_seen"] >= 1
    # Requests the killed worker had published but never answered may be there too.
    pulled = {m.data.decode() for m in pubsub_topic.pull(expected=len(replies), timeout=30)}
    assert {o.body for o, _ in replies} <= pulled


def test_emulator_outage_fails_fast_and_recovers(
    request: pytest.FixtureRequest, cloudclients_env: dict[str, str], unique_name: Callable[[str], str]
) -> None:
    """The Pub/Sub emulator is SIGKILLed mid-load and restarted on the same port 3 s later.
    During the outage requests fail (503) within the publish timeout — none hangs —
    and they succeed again within 5 s of the emulator being back, with no app restart."""
    timeout = 2.0
    bound = timeout + 0.01 + 2.0 + 1.5  # publish timeout + batch latency + confirm grace + slack
    kind = request.config.getoption("--pubsub-emulator")
    emulator = start_pubsub_emulator(kind, project=TEST_PROJECT)
    port = int(emulator.host.rsplit(":", 1)[1])
    topic = f"projects/{TEST_PROJECT}/topics/{unique_name('outage')}"
    subscription = f"projects/{TEST_PROJECT}/subscriptions/{unique_name('outage')}"

    def create_resources() -> ClientRegistry:
        settings = Settings.from_mapping(
            {"CLOUDCLIENTS_PROJECT": TEST_PROJECT, "CLOUDCLIENTS_PUBSUB_EMULATOR_HOST": emulator.host}, {}
        )
        admin = ClientRegistry.from_settings(settings, name="outage-admin")
        admin.publisher.create_topic(name=topic)
        admin.subscriber.create_subscription(name=subscription, topic=topic)
        return admin

    admin = create_resources()
    env = {**cloudclients_env, **emulator.env, "CLOUDCLIENTS_PUBLISH_TIMEOUT": str(timeout)}
    try:
        with gunicorn(["-w", "2", "--threads", "4"], env) as server, \
                Load(f"{server.url}/track?topic={quote(topic)}", threads=4, timeout=30) as load:
            assert wait_for(lambda: len(ok(load.snapshot())) >= 20, 20), "20 publishes before the outage"
            os.killpg(emulator.process.pid, signal.SIGKILL)
            killed = time.monotonic()
            admin.close(timeout=1)
            assert wait_for(lambda: any(o.status == 503 and o.started > killed for o in load.snapshot()), 15), (
                "a failed request during the outage")
            time.sleep(max(0.0, killed + 3 - time.monotonic()))
            emulator.stop()
            emulator = start_pubsub_emulator(kind, project=TEST_PROJECT, port=port)
            admin = create_resources()
            back = time.monotonic()
            assert wait_for(lambda: any(o.status == 200 and o.started > back for o in load.snapshot()), 10), (
                "a successful request after the restart")
        outcomes = load.outcomes
        during = [o for o in outcomes if killed < o.started < back]
        recovered = min(o.started + o.seconds for o in outcomes if o.status == 200 and o.started > back) - back
        slowest = max(o.seconds for o in outcomes)
        print(f"outage {back - killed:.1f} s: {len(during)} requests during it "
              f"({sum(o.status == 503 for o in during)} x 503), slowest request {slowest:.2f} s, "
              f"recovered {recovered:.2f} s after restart")
        assert all(o.status in (200, 503) for o in outcomes), {o.status for o in outcomes}
        assert slowest <= bound, f"a request took {slowest:.1f} s (bound {bound} s)"
        assert recovered <= 5.0
        after = [o.body for o in outcomes if o.status == 200 and o.started > back]
        got = {m.data.decode() for m in pull_messages(admin, subscription, len(after), timeout=20)}
        assert set(after) <= got
    finally:
        admin.close(timeout=1)
        emulator.stop()
