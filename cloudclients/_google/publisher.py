"""The process's publisher: every future tracked until it resolves, no failure silent."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.api_core import retry as api_retry
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport, PublisherRestTransport

from .._config import Settings, check_project_for
from .._names import resolve_topic
from .._ratelimit import RateLimitedLog
from .channels import EmulatorUnreachableError, pubsub_transport, refused

__all__ = ["TrackingPublisher", "build_publisher", "close_publisher", "publisher_metrics"]

log = logging.getLogger("cloudclients")

_RETRYABLE = (
    api_exceptions.Aborted,
    api_exceptions.Cancelled,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.ResourceExhausted,
    api_exceptions.ServiceUnavailable,
    api_exceptions.Unknown,
)


@dataclass(frozen=True)
class _Pending:
    topic: str
    #: Whether ``cloudclients.publish()`` reports this one's outcome (then we don't log it twice).
    tracked: bool


class TrackingPublisher(pubsub_v1.PublisherClient):  # type: ignore[misc]
    """A ``PublisherClient`` that remembers its outstanding publish futures.

    ``PublisherClient.publish`` returns before anything is sent and ``stop()``
    does not wait for in-flight batches, so a plain client loses messages at
    shutdown. This subclass keeps every future until it resolves, so
    :func:`close_publisher` can wait for all of them, and counts outcomes.

    It also holds :meth:`publish` to the standard of ``cloudclients.publish()``:
    short topic names resolve against the project, ``str`` data is UTF-8, and
    a failure nobody waits for is logged at ERROR (rate-limited per topic, with
    the topic and the error, never the data) and counted.
    """

    def __init__(self, *, project: Callable[[], str], emulator_host: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cc_project = project
        self._cc_emulator_host = emulator_host
        self._cc_lock = threading.Lock()
        self._cc_pending: dict[concurrent.futures.Future[str], _Pending] = {}
        self._cc_log = RateLimitedLog(log)
        self.cc_published = 0
        self.cc_failed = 0
        self.cc_stopped = False

    def publish(self, topic: str, data: bytes | str, ordering_key: str = "", **attrs: Any) -> Any:
        """Publish like ``PublisherClient.publish``, tracked; *topic* may be a short name
        (resolved against the project) and *data* a ``str`` (sent as UTF-8).

        :raises TypeError: for data that is neither bytes nor str.
        :raises ValueError: for a malformed topic name.
        """
        return self.cc_publish(topic, data, ordering_key, attrs, tracked=False)[0]

    def cc_publish(
        self, topic: str, data: bytes | str, ordering_key: str, attributes: Mapping[str, Any], *, tracked: bool
    ) -> tuple[concurrent.futures.Future[str], str]:
        """:meth:`publish` for ``cloudclients.publish()``, which reports outcomes itself
        (*tracked*); returns the future and the full topic name."""
        name = resolve_topic(topic, self._cc_project)
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, bytes):
            raise TypeError(
                f"publish() data must be bytes or str, not {type(data).__name__}. "
                "Fix: serialise it first, e.g. json.dumps(obj)."
            )
        future: concurrent.futures.Future[str] = super().publish(name, data, ordering_key=ordering_key, **attributes)
        with self._cc_lock:
            self._cc_pending[future] = _Pending(name, tracked)
        future.add_done_callback(self._cc_done)
        return future, name

    def describe(self, exc: BaseException) -> str:
        """A one-line account of a publish failure (type and message; never data or credentials)."""
        if isinstance(exc, EmulatorUnreachableError):
            return str(exc)
        if self._cc_emulator_host and isinstance(exc, api_exceptions.ServiceUnavailable):  # the REST transport
            return f"Pub/Sub emulator at {self._cc_emulator_host} not reachable — is it running? ({exc.message})"
        return f"{type(exc).__name__}: {exc}"

    def _cc_done(self, future: concurrent.futures.Future[str]) -> None:
        with self._cc_lock:
            pending = self._cc_pending.pop(future, None)
            failed = future.cancelled() or future.exception() is not None
            if failed:
                self.cc_failed += 1
            else:
                self.cc_published += 1
        if failed and pending is not None and not pending.tracked:
            exc = future.exception() if not future.cancelled() else concurrent.futures.CancelledError()
            assert exc is not None
            # Whether the caller looks at the future is unknowable here (it may wait on it
            # later, or never): the failure is logged either way, so none is silent.
            self._cc_log.error(pending.topic, "cloudclients: publish to %s failed (a get_publisher().publish() "
                               "future; logged whether or not its caller checks it): %s",
                               pending.topic, self.describe(exc))

    def outstanding(self) -> list[concurrent.futures.Future[str]]:
        """Return the futures not resolved yet."""
        with self._cc_lock:
            return list(self._cc_pending)

    def metrics(self) -> dict[str, int]:
        """Publishes confirmed, failed and still outstanding in this process."""
        with self._cc_lock:
            return {"published": self.cc_published, "failed": self.cc_failed, "outstanding": len(self._cc_pending)}


def _retry_predicate(settings: Settings) -> Callable[[Exception], bool]:
    retryable = api_retry.if_exception_type(*_RETRYABLE)
    host = settings.pubsub_emulator_host
    if host is None:
        return retryable

    def predicate(exc: Exception) -> bool:
        # Against an emulator, "connection refused" means it is not running: retrying for
        # the whole publish timeout only delays the answer. (Over gRPC the channel's
        # interceptor already raised EmulatorUnreachableError, which is not retryable;
        # this covers the REST transport.)
        if isinstance(exc, api_exceptions.ServiceUnavailable) and refused(host):
            return False
        return retryable(exc)

    return predicate


def build_publisher(settings: Settings, project: Callable[[], str]) -> TrackingPublisher:
    """Build the process's publisher from *settings*.

    :raises ConfigError: when Pub/Sub is not emulated and the project is an ID only
        the emulators accept.
    """
    check_project_for(settings, "Pub/Sub")
    retry = api_retry.Retry(
        initial=0.1,
        maximum=min(5.0, settings.publish_timeout),
        multiplier=1.3,
        predicate=_retry_predicate(settings),
        timeout=settings.publish_timeout,
    )
    return TrackingPublisher(
        project=project,
        emulator_host=settings.pubsub_emulator_host,
        batch_settings=pubsub_v1.types.BatchSettings(
            max_bytes=settings.batch_max_bytes,
            max_latency=settings.batch_max_latency,
            max_messages=settings.batch_max_messages,
        ),
        publisher_options=pubsub_v1.types.PublisherOptions(
            enable_message_ordering=settings.enable_message_ordering,
            retry=retry,
            timeout=settings.publish_timeout,
        ),
        transport=pubsub_transport(settings, PublisherGrpcTransport, PublisherRestTransport),
    )


def close_publisher(client: TrackingPublisher, timeout: float) -> None:
    """Send everything queued, wait up to *timeout* for every outstanding
    publish, then log how many were flushed and how many failed."""
    before_ok, before_failed = client.cc_published, client.cc_failed
    if not client.cc_stopped:  # stop() raises when called twice
        client.cc_stopped = True
        client.stop()
    pending = client.outstanding()
    _, not_done = concurrent.futures.wait(pending, timeout=timeout)
    flushed = client.cc_published - before_ok
    failed = client.cc_failed - before_failed
    if not_done:
        log.error(
            "cloudclients: publisher closed with %d message(s) unconfirmed after %.1f s "
            "(%d flushed, %d failed)", len(not_done), timeout, flushed, failed,
        )
    else:
        log.info(
            "cloudclients: publisher flushed %d message(s) at close (%d failed) in pid %d",
            flushed, failed, os.getpid(),
        )
    client.transport.close()


def publisher_metrics(client: TrackingPublisher) -> dict[str, int]:
    """Counters for the registry's stats: publishes confirmed, failed, outstanding."""
    return client.metrics()
