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
