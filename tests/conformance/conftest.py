"""Conformance targets: our emulator always, Google's official one when installed.

One emulator process per target for the whole session (``target``, params
``cloudclients`` and ``official``). Each test works in a project of its own
(``names``), through the real google-cloud-pubsub clients.

Our emulator is part of this repository: when it cannot start, its tests fail.
The official one is optional: its tests are skipped, with the reason, when it
is not installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import pubsub_v1

from cloudclients._emulators import EmulatorNotInstalledError, start_pubsub_emulator

from .support import Names, Target, close_publisher, make_publisher, make_subscriber

HERE = Path(__file__).parent

#: Per-test bound (pytest-timeout) for this directory: nothing here may hang a run.
TEST_TIMEOUT = 90


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


@pytest.fixture(scope="session", params=["cloudclients", "official"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A running emulator of one kind, with clients, for the whole session."""
    kind = request.param
    try:
        emulator = start_pubsub_emulator(kind, project="conformance")
    except EmulatorNotInstalledError as exc:
        if kind == "cloudclients":
            pytest.fail(f"our emulator must be installed (make install): {exc}", pytrace=False)
        pytest.skip(f"official emulator not installed: {exc}")
    target = Target.connect(kind, emulator)
    try:
        yield target
    finally:
        target.close()
        emulator.stop()


@pytest.fixture
def names(target: Target) -> Names:
    """Resource names (and creators) in a project unique to this test."""
    return Names(target)


@pytest.fixture
def known_gap(request: pytest.FixtureRequest, target: Target) -> Callable[..., None]:
    """``known_gap(reason, strict=True)``: expect this test to fail on the official emulator."""

    def mark(reason: str, *, strict: bool = True) -> None:
        if target.kind == "official":
            request.applymarker(pytest.mark.xfail(reason=reason, strict=strict))

    return mark


class Clients:
    """Extra clients for one test (a second subscriber process, an ordering publisher), closed after it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._publishers: list[pubsub_v1.PublisherClient] = []
        self._subscribers: list[pubsub_v1.SubscriberClient] = []

    def publisher(self, *, ordering: bool = False) -> pubsub_v1.PublisherClient:
        client = make_publisher(self.target.host, ordering=ordering)
        self._publishers.append(client)
        return client

    def subscriber(self) -> pubsub_v1.SubscriberClient:
        client = make_subscriber(self.target.host)
        self._subscribers.append(client)
        return client

    def close(self) -> None:
        for publisher in self._publishers:
            close_publisher(publisher)
        for subscriber in self._subscribers:
            subscriber.close()


@pytest.fixture
def clients(target: Target) -> Iterator[Clients]:
    made = Clients(target)
    try:
        yield made
    finally:
        made.close()


class Streams:
    """``subscribe()`` futures opened by one test; all cancelled after it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._futures: list[Any] = []

    def open(
        self,
        subscription: str,
        callback: Callable[[Any], None],
        *,
        subscriber: pubsub_v1.SubscriberClient | None = None,
        flow_control: pubsub_v1.types.FlowControl | None = None,
    ) -> Any:
        client = subscriber or self.target.subscriber
        kwargs: dict[str, Any] = {} if flow_control is None else {"flow_control": flow_control}
        future = client.subscribe(subscription, callback, **kwargs)
        self._futures.append(future)
        return future

    @staticmethod
    def stop(future: Any, timeout: float = 10.0) -> None:
        """Cancel a streaming pull and wait until the client closed it."""
        future.cancel()
        with contextlib.suppress(Exception):
            future.result(timeout=timeout)

    def close(self) -> None:
        for future in self._futures:
            self.stop(future)


@pytest.fixture
def streams(target: Target) -> Iterator[Streams]:
    opened = Streams(target)
    try:
        yield opened
    finally:
        opened.close()
