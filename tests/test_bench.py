"""The benchmark machinery still works (correctness only: no timing is asserted here)."""

from __future__ import annotations

import pytest

from bench import e2e
from cloudclients.testing import EmulatorProcess

pytestmark = pytest.mark.slow


def test_shutdown_flush_delivers_every_queued_message(pubsub_emulator: EmulatorProcess) -> None:
    """What `make bench` section 4 measures: close() right after queueing loses nothing."""
    result = e2e.shutdown_flush(pubsub_emulator, count=2_000)
    assert result.received == result.queued == 2_000


def test_every_bench_variant_serves_without_errors(pubsub_emulator: EmulatorProcess) -> None:
    """Each variant of bench/app.py answers its load with 2xx only (one short round)."""
    variants = ["noop", "cloudclients", "global", "per_request", "after"]
    results = e2e.requests_per_second(pubsub_emulator, variants, seconds=1, rounds=1)
    for variant in variants:
        assert results[variant].requests > 0, variant
        assert results[variant].errors == 0, variant


def test_the_emulator_load_scenarios_run() -> None:
    """bench/emulator_load.py's scenarios, tiny, against our emulator: each measures something and
    every client process reports back."""
    from bench import emulator_load
    from bench.bench_emulator import tree_cpu_s, tree_rss_mb
    from cloudclients.testing import start_pubsub_emulator

    emulator = start_pubsub_emulator("cloudclients", project=emulator_load.PROJECT)
    try:
        mixed = emulator_load.mix(emulator.host, emulator.process.pid, publishers=1, threads=2, subscribers=1,
                                  streams=1, seconds=3, rate=20.0, tree_cpu_s=tree_cpu_s, tree_rss_mb=tree_rss_mb)
        assert mixed.published_per_s > 0 and mixed.delivered_per_s > 0 and mixed.publish_errors == 0
        assert mixed.cpu_ms_per_msg > 0 and mixed.rss_max_mb > 0
        latency = emulator_load.publish_latency(emulator.host, leases=200, streams=2, samples=20)
        assert latency.load == 200 and latency.idle_ms > 0 and latency.loaded_ms > 0
        streams = emulator_load.open_streams(emulator.host, subscriptions=2, per_sub=5, samples=20)
        assert streams.load == 10 and streams.loaded_ms > 0
        drained = emulator_load.drain(emulator.host, count=200)
        assert drained.received == drained.total == 200
    finally:
        emulator.stop()
