"""Request-scoped publishing: no publish failure goes unnoticed.

``PublisherClient.publish()`` returns a future before anything is sent. A view
that ignores the future tells its caller "done" for a message that may never
arrive. :func:`publish` records each future on ``g`` and, depending on
``CLOUDCLIENTS_PUBLISH_CONFIRM``:

``before_response`` (default)
    an ``after_request`` hook waits for every publish of the request (up to the
    publish timeout) before the response leaves. A failure replaces the
    response with :class:`PublishError` — a 503 the app can handle with
    ``@app.errorhandler(PublishError)``. A 2xx therefore means "confirmed".
``after_response``
    the response is not held up; each failure is logged (topic and error, at most
    one line per topic every 10 s with the count of the rest) and counted in
    ``registry.stats()`` (``clients.publisher.metrics.failed``).

Outside a request (a CLI command, a job in an app context) nothing waits:
failures are logged as in ``after_response``; call
:func:`confirm_publishes` or ``future.result()`` to wait.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

from flask import Flask, Response, current_app, g, has_app_context, has_request_context
from werkzeug.exceptions import ServiceUnavailable

from ._config import Settings
from ._names import resolve_topic
from ._ratelimit import RateLimitedLog
from ._state import app_state

__all__ = ["PublishError", "PublishFailure", "after_request", "confirm_publishes", "publish", "teardown"]

log = logging.getLogger("cloudclients")
# Publish failures come in bursts (an outage fails every request's publish): one line per
# topic per interval, with the count of the rest. Topic and error only: attribute values
# and the payload are application data.
_failures = RateLimitedLog(log)

#: The request's publishes: cloudclients' one attribute on ``g``.
_G_KEY = "_cloudclients"

#: Extra wait on top of the publish timeout before a future counts as lost: the
#: client's own deadline covers the RPC, this covers the batch latency and the
#: callback thread. A bound, so a stuck future can never hang a request.
_GRACE = 2.0


@dataclass(frozen=True)
class PublishFailure:
    """One publish that did not succeed: where it went and why.

    Its ``str`` (what log lines and the 503 body show) names the topic, the
    attribute *names* and the error; attribute values, like the payload, are
    application data and appear nowhere but in :attr:`attributes`.
    """

    topic: str
    attributes: Mapping[str, str]
    error: str

    def __str__(self) -> str:
        names = f" (attributes {', '.join(sorted(self.attributes))})" if self.attributes else ""
        return f"{self.topic}{names}: {self.error}"


class PublishError(ServiceUnavailable):
    """Publishes of this request were not confirmed (``before_response`` mode,
    or :func:`confirm_publishes`).

    A 503 ``HTTPException``: unhandled, Flask answers 503 with the description;
    register ``@app.errorhandler(PublishError)`` to answer otherwise.

    :ivar failures: one :class:`PublishFailure` per failed publish.
    """

    def __init__(self, failures: list[PublishFailure]) -> None:
        self.failures = failures
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        super().__init__(
            description=f"{len(failures)} message(s) could not be published: {first}{more}"
        )


@dataclass
class _Tracked:
    future: Future[str]
    topic: str
    attributes: dict[str, str]
    #: ``describe(exc)``: the one-line account of a failure (the publisher knows the emulator host).
    describe: Callable[[BaseException], str]
    #: Failures are rate-limited per app and topic.
    log_key: str = ""
    confirmed: bool = False


@dataclass
class _RequestPublishes:
    pending: list[_Tracked] = field(default_factory=list)


def publish(topic: str, data: bytes | str, *, ordering_key: str = "", **attributes: str) -> Future[str]:
    """Publish *data* to *topic* with this process's publisher, tracked for the request.

    :param topic: a full name ``projects/P/topics/T`` or a short name ``T``,
        resolved against the app's project (configured or discovered).
    :param data: the payload; ``str`` is encoded as UTF-8.
    :param ordering_key: requires ``CLOUDCLIENTS_ENABLE_MESSAGE_ORDERING``.
    :param attributes: message attributes (string values).
    :returns: the publish future (its result is the message ID).
    :raises RuntimeError: outside an application context.
    :raises ValueError: for a malformed topic name.
    :raises TypeError: for non-bytes, non-str data.
    """
    state = app_state(what="cloudclients.publish()")
    publisher = state.registry.get("publisher")
    cc_publish = getattr(publisher, "cc_publish", None)
    if cc_publish is None:  # a publisher registered by the app itself (tests register fakes)
        name = resolve_topic(topic, lambda: state.registry.project)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        future: Future[str] = publisher.publish(name, payload, ordering_key=ordering_key, **attributes)
    else:  # resolves the name and checks the data exactly as get_publisher().publish() does
        future, name = cc_publish(topic, data, ordering_key, attributes, tracked=True)
    tracked = _Tracked(future, name, dict(attributes), getattr(publisher, "describe", _describe), f"{id(state)} {name}")
    if has_request_context() and state.settings.publish_confirm == "before_response":
        bucket: _RequestPublishes | None = g.get(_G_KEY)
        if bucket is None:
            bucket = _RequestPublishes()
            setattr(g, _G_KEY, bucket)
        bucket.pending.append(tracked)
    else:
        future.add_done_callback(lambda f: _log_if_failed(tracked))
    return future


def confirm_publishes(timeout: float | None = None) -> list[str]:
    """Wait for every publish of the current request not confirmed yet.

    For views that must know before going on (say, before committing a database
    transaction). Returns the message IDs, in publish order.

    :param timeout: seconds; default the publish timeout plus a short grace.
    :raises PublishError: if any of them failed or did not finish in time.
    """
    if not has_app_context():
        return []
    bucket: _RequestPublishes | None = g.get(_G_KEY)
    if bucket is None:
        return []
    return _confirm(bucket, app_state().settings, timeout)


def _confirm(bucket: _RequestPublishes, settings: Settings, timeout: float | None) -> list[str]:
    pending = [t for t in bucket.pending if not t.confirmed]
    if not pending:
        return []
    limit = settings.publish_timeout + settings.batch_max_latency + _GRACE if timeout is None else timeout
    started = time.monotonic()
    _wait_all([t.future for t in pending], started + limit)
    ids: list[str] = []
    failures: list[tuple[_Tracked, PublishFailure]] = []
    for tracked in pending:
        tracked.confirmed = True
        future = tracked.future
        if not future.done():
            # Still running: log its outcome when it comes, so it is never silent.
            future.add_done_callback(lambda f, t=tracked: _log_if_failed(t))  # type: ignore[misc]
            failures.append((tracked, PublishFailure(tracked.topic, tracked.attributes,
                                                     f"not confirmed within {limit:.1f} s")))
        elif (exc := _exception(future)) is not None:
            failures.append((tracked, PublishFailure(tracked.topic, tracked.attributes, tracked.describe(exc))))
        else:
            ids.append(future.result())
    if failures:
        seconds = time.monotonic() - started
        for tracked, failure in failures:
            _failures.error(tracked.log_key, "cloudclients: publish to %s failed after %.1f s: %s",
                            failure.topic, seconds, failure.error)
        raise PublishError([failure for _, failure in failures])
    return ids


def after_request(response: Response) -> Response:
    """``after_request`` hook (registered by ``init_app``): confirm the request's publishes.

    Only requests that published pay for it.
    """
    bucket: _RequestPublishes | None = g.get(_G_KEY)
    if bucket is None:
        return response
    try:
        _confirm(bucket, app_state().settings, None)
    except PublishError as exc:
        # Through the app's error handling, so @app.errorhandler(PublishError)
        # (or a 503 handler) shapes the answer; unhandled, it is a plain 503.
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        return app.make_response(app.handle_user_exception(exc))
    return response


def teardown(exc: BaseException | None) -> None:
    """``teardown_appcontext`` hook (registered by ``init_app``); never raises.

    A request that ended in an unhandled exception never reached
    ``after_request``: its publishes still get their outcome logged.
    """
    try:
        bucket: _RequestPublishes | None = g.pop(_G_KEY, None)
        if bucket is not None:
            for tracked in bucket.pending:
                if not tracked.confirmed:
                    tracked.confirmed = True
                    tracked.future.add_done_callback(lambda f, t=tracked: _log_if_failed(t))  # type: ignore[misc]
    except Exception:  # pragma: no cover - teardown must never raise
        log.error("cloudclients: publish teardown failed", exc_info=True)


def _wait_all(futures: list[Future[str]], deadline: float) -> None:
    """Wait until every future is done or *deadline* (monotonic) passes.

    One future after the other, each with the time left: the same outcome as
    ``concurrent.futures.wait`` for the one or two futures a request has, at a
    fraction of its cost (no waiter objects installed on every future).
    """
    for future in futures:
        if future.done():
            continue
        try:
            future.exception(timeout=max(deadline - time.monotonic(), 0.0))
        except (TimeoutError, concurrent.futures.CancelledError):
            if time.monotonic() >= deadline:
                return


def _exception(future: Future[str]) -> BaseException | None:
    if future.cancelled():
        return concurrent.futures.CancelledError()
    return future.exception()


def _describe(exc: BaseException) -> str:
    # Type and message only: Google API errors carry the status and the
    # resource name, never credentials.
    return f"{type(exc).__name__}: {exc}"


def _log_if_failed(tracked: _Tracked) -> None:
    exc = _exception(tracked.future)
    if exc is not None:
        _failures.error(tracked.log_key, "cloudclients: publish to %s failed: %s", tracked.topic, tracked.describe(exc))
