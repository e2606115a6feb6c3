"""ClientRegistry: lazy, one construction per kind per process, idempotent close."""

from __future__ import annotations

import gc
import logging
import random
import threading
import weakref
from typing import Any

import pytest

from cloudclients import ClientRegistry, RegistryState, Settings


class Counted:
    """A fake client that counts closes (unit tests of the registry's own logic)."""

    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_nothing_is_built_until_first_access(base_config: dict[str, Any]) -> None:
    """from_settings registers factories but constructs no client."""
    registry = ClientRegistry.from_settings(Settings.from_mapping(base_config, {}))
    stats = registry.stats()
    assert stats["clients"] == {
        "publisher": {"alive": False, "constructions": 0, "metrics": {}},
        "storage": {"alive": False, "constructions": 0, "metrics": {}},
        "subscriber": {"alive": False, "constructions": 0, "metrics": {}},
    }
    assert registry.peek("publisher") is None
    registry.close()


def test_get_builds_once_and_returns_the_same_object() -> None:
    """Repeated get() returns the one client built on first access."""
    registry = ClientRegistry("unit")
    registry.register("thing", Counted)
    first = registry.get("thing")
    assert registry.get("thing") is first
    assert registry.peek("thing") is first
    assert registry.stats()["clients"]["thing"] == {"alive": True, "constructions": 1, "metrics": {}}


def test_metrics_hook_feeds_stats_and_never_raises() -> None:
    """A client's metrics(client) counters appear in stats(); a failing hook is logged, not raised."""
    registry = ClientRegistry("unit")
    registry.register("counted", Counted, metrics=lambda c: {"closed": c.closed})
    registry.register("broken", Counted, metrics=lambda c: {"x": 1 // 0})
    assert registry.stats()["clients"]["counted"]["metrics"] == {}  # not built yet
    registry.get("counted")
    registry.get("broken")
    clients = registry.stats()["clients"]
    assert clients["counted"]["metrics"] == {"closed": 0}
    assert clients["broken"] == {"alive": True, "constructions": 1, "metrics": {}}
    registry.close()


def test_unknown_name_says_what_is_registered() -> None:
    """get() of an unregistered name raises KeyError listing the registered ones."""
    registry = ClientRegistry("unit")
    registry.register("thing", Counted)
    with pytest.raises(KeyError, match=r"No client named 'bigquery'.*\['thing'\]"):
        registry.get("bigquery")


def test_double_registration_needs_replace() -> None:
    """A second register() of a name is refused unless replace=True, which closes the old client."""
    registry = ClientRegistry("unit")
    registry.register("thing", Counted)
    old = registry.get("thing")
    with pytest.raises(ValueError, match=r"already registered.*replace=True"):
        registry.register("thing", Counted)
    registry.register("thing", Counted, replace=True)
    assert old.closed == 1
    assert registry.get("thing") is not old


def test_close_is_idempotent_and_refuses_new_clients() -> None:
    """close() closes each built client once, twice is harmless, and later builds raise RuntimeError."""
    registry = ClientRegistry("unit")
    calls: list[tuple[Any, float]] = []
    registry.register("a", Counted, close=lambda c, t: calls.append((c, t)))
    registry.register("b", Counted)
    registry.register("never", Counted)
    a, b = registry.get("a"), registry.get("b")
    registry.close(timeout=3)
    registry.close(timeout=3)
    assert [c for c, _ in calls] == [a] and 0 < calls[0][1] <= 3
    assert b.closed == 1
    assert registry.state is RegistryState.CLOSED
    with pytest.raises(RuntimeError, match="registry 'unit' is closed"):
        registry.get("never")


def test_a_registry_with_clients_outlives_its_owner_until_closed() -> None:
    """Dropping every reference to a registry that built a client does not drop
    the client (its publisher may hold batched messages the exit handlers must
    flush); closing releases it, and a registry that built nothing is collected."""
    registry = ClientRegistry("unit")
    registry.register("a", Counted)
    client = registry.get("a")
    ref = weakref.ref(registry)
    del registry
    gc.collect()
    kept = ref()
    assert kept is not None and client.closed == 0
    kept.close()
    del kept
    gc.collect()
    assert ref() is None

    idle = weakref.ref(ClientRegistry("idle"))
    gc.collect()
    assert idle() is None


def test_close_logs_failures_and_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    """A closer that raises is logged with its traceback; the other clients still close."""
    registry = ClientRegistry("unit")

    def explode(client: Any, timeout: float) -> None:
        raise OSError("boom")

    registry.register("bad", Counted, close=explode)
    registry.register("good", Counted)
    good = registry.get("good")
    registry.get("bad")
    with caplog.at_level(logging.ERROR, logger="cloudclients"):
        registry.close()
    assert good.closed == 1
    assert any("closing the bad client failed" in r.message and r.exc_info for r in caplog.records)


def test_factory_error_propagates_and_next_access_retries() -> None:
    """A failing factory raises to the caller and leaves nothing half-built."""
    registry = ClientRegistry("unit")
    attempts = []

    def flaky() -> Counted:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("metadata server down")
        return Counted()

    registry.register("thing", flaky)
    with pytest.raises(ConnectionError):
        registry.get("thing")
    assert isinstance(registry.get("thing"), Counted)
    assert registry.stats()["clients"]["thing"]["constructions"] == 1


@pytest.mark.slow
def test_64_threads_racing_first_access_build_one_client_per_kind(base_config: dict[str, Any]) -> None:
    """64 threads hitting a fresh registry at once, 50 times over: exactly one
    real publisher, subscriber and storage client constructed each time."""
    settings = Settings.from_mapping(base_config, {})
    kinds = ["publisher", "subscriber", "storage"]
    for _round in range(50):
        registry = ClientRegistry.from_settings(settings, name=f"race-{_round}")
        barrier = threading.Barrier(64)
        seen: list[dict[str, int]] = []
        errors: list[BaseException] = []

        def worker(
            registry: ClientRegistry = registry,
            barrier: threading.Barrier = barrier,
            seen: list[dict[str, int]] = seen,
            errors: list[BaseException] = errors,
        ) -> None:
            order = random.sample(kinds, k=3)
            try:
                barrier.wait(timeout=30)
                seen.append({kind: id(registry.get(kind)) for kind in order})
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert len(seen) == 64
        stats = registry.stats()["clients"]
        assert {k: stats[k]["constructions"] for k in kinds} == dict.fromkeys(kinds, 1)
        assert all(s == seen[0] for s in seen)
        registry.close(timeout=5)
