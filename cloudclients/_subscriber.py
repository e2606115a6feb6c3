"""Background subscriptions in a Flask app: declared at import, started in each worker.

::

    def on_order(message: ReceivedMessage) -> None:   # return → ack, raise → nack
        ...

    cloudclients.subscribe("orders-worker", on_order, app=app, max_messages=50)

``subscribe`` only *declares* the subscription: nothing is pulled and no
client is built, so calling it at import time in a gunicorn ``--preload``
master is safe. The streaming pull starts inside the process that will run it:

* on the first request the process serves (a ``before_request`` hook that
  ``init_app`` registers, like every other hook of the app), or
* in gunicorn's ``post_worker_init`` hook, for workers that may get no HTTP
  traffic: ``from cloudclients import gunicorn_post_worker_init as post_worker_init``
  in ``gunicorn.conf.py``, or
* by calling :func:`start_subscriptions` (scripts, other servers' post-fork hooks).

It stops when the app's registry closes (at exit, on SIGTERM, in gunicorn's
``worker_exit``): the registry runs the app's subscription group's stop
*before* it closes any client, so running handlers finish and ack, and only
then the subscriber closes and the publisher flushes what the handlers
published. The lifecycle itself is ``_background``'s.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, has_app_context

from ._background import BackgroundSubscription, Handler
from ._message import ReceivedMessage
from ._names import resolve_subscription
from ._state import CloudClientsState, all_states, app_state

__all__ = ["gunicorn_post_worker_init", "start_on_request", "start_subscriptions", "subscribe", "subscriptions"]

log = logging.getLogger("cloudclients")


def subscribe(
    subscription: str,
    handler: Handler,
    *,
    app: Flask | None = None,
    max_messages: int = 100,
    max_bytes: int = 100 * 1024 * 1024,
    max_lease_duration: float = 3600.0,
    max_workers: int = 10,
) -> BackgroundSubscription:
    """Declare a background subscription of *app* (default: the current app).

    Nothing starts here (safe in a ``--preload`` master): the stream starts in
    each process on its first request, in gunicorn's ``post_worker_init``
    (:func:`gunicorn_post_worker_init`) or on :func:`start_subscriptions`.
    *handler* runs inside an app context, so it can use ``get_publisher()``
    and friends. See :class:`BackgroundSubscription` for the flow-control
    parameters.

    :param subscription: a short name (resolved against ``CLOUDCLIENTS_PROJECT``)
        or ``projects/P/subscriptions/S``.
    :raises ValueError: for a bad name or flow-control value.
    :raises RuntimeError: without *app* outside an app context, or when
        cloudclients is not initialised on the app.
    """
    state = app_state(app, what="cloudclients.subscribe() without app=")
    resolve_subscription(subscription, "syntax-check")  # a malformed name fails here, at declaration
    registry = state.registry

    def name() -> str:
        # Resolved when the stream starts, in the worker: discovering the project
        # may ask the metadata server, which a preload master must never do.
        return resolve_subscription(subscription, lambda: registry.project)
    flask_app: Flask = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]

    def in_app_context(message: ReceivedMessage) -> Any:
        with flask_app.app_context():
            return handler(message)

    return BackgroundSubscription(
        registry, name, in_app_context, max_messages=max_messages, max_bytes=max_bytes,
        max_lease_duration=max_lease_duration, max_workers=max_workers, group=state.subscriptions,
    )


def start_on_request(state: CloudClientsState) -> None:
    """``before_request`` hook (registered by ``init_app``): start the app's subscriptions
    that have no stream in this process yet. Never raises."""
    try:
        state.subscriptions.start_idle()
    except Exception:  # a request must not fail because a stream could not start
        log.error("cloudclients: starting background subscriptions failed", exc_info=True)


def subscriptions(app: Flask | None = None) -> list[BackgroundSubscription]:
    """The background subscriptions declared on *app* (default: the current app)."""
    return list(app_state(app, what="cloudclients.subscriptions()").subscriptions)


def start_subscriptions(app: Flask | None = None) -> int:
    """Start the background subscriptions of *app* in this process — or, without
    *app* and outside an app context, of every app in this process.

    Call it after the fork (a worker's post-fork hook, or the main of a script).
    Subscriptions already started here (running, stopped or failed) are left alone.

    It also checks the push endpoints registered since ``init_app`` and logs,
    once per process, those that can never accept a push (ERROR).

    :returns: how many streams this call started.
    """
    states = all_states() if app is None and not has_app_context() else [app_state(app)]
    started = 0
    for state in states:
        state.check_endpoints()
        started += state.subscriptions.start_idle()
    return started


def gunicorn_post_worker_init(worker: Any) -> None:
    """gunicorn ``post_worker_init`` hook: start every background subscription in the worker
    and report push endpoints that can never accept a push (see :func:`start_subscriptions`).

    In ``gunicorn.conf.py``: ``from cloudclients import gunicorn_post_worker_init as post_worker_init``.
    """
    start_subscriptions()
