"""The process's subscriber, and streaming pulls for background subscriptions."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

from google.cloud import pubsub_v1
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport, SubscriberRestTransport

from .._config import Settings, check_project_for
from .channels import pubsub_transport

__all__ = ["build_subscriber", "close_subscriber", "start_streaming_pull"]


def build_subscriber(settings: Settings) -> pubsub_v1.SubscriberClient:
    """Build the process's subscriber from *settings*.

    :raises ConfigError: when Pub/Sub is not emulated and the project is an ID only
        the emulators accept.
    """
    check_project_for(settings, "Pub/Sub")
    return pubsub_v1.SubscriberClient(
        transport=pubsub_transport(settings, SubscriberGrpcTransport, SubscriberRestTransport)
    )


def close_subscriber(client: pubsub_v1.SubscriberClient, timeout: float) -> None:
    """Close the subscriber's transport (open streaming pulls end)."""
    client.close()


def start_streaming_pull(
    client: pubsub_v1.SubscriberClient,
    subscription: str,
    callback: Callable[[Any], None],
    *,
    max_messages: int,
    max_bytes: int,
    max_lease_duration: float,
    max_workers: int,
) -> Any:
    """Open a streaming pull on *subscription* and return its ``StreamingPullFuture``.

    Flow control bounds what is leased but not yet acked or nacked; callbacks
    run on a pool of *max_workers* threads, and cancelling waits for running
    callbacks (``await_callbacks_on_shutdown``) so that none is cut off mid-way.
    """
    from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

    executor = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="cloudclients-sub")
    future = client.subscribe(
        subscription,
        callback,
        flow_control=pubsub_v1.types.FlowControl(
            max_messages=max_messages, max_bytes=max_bytes, max_lease_duration=max_lease_duration
        ),
        scheduler=ThreadScheduler(executor=executor),
        await_callbacks_on_shutdown=True,
    )
    _cancel_leftover_stream(future)
    return future


def _cancel_leftover_stream(future: Any) -> None:
    """Make sure the stream's gRPC call is cancelled once the streaming pull ends.

    google-api-core's ``BackgroundConsumer`` signals "started" before its thread
    opens the call, so a cancel that comes at once (``start()`` then ``stop()``)
    can close the RPC while it has no call yet; the thread then opens one that
    sends its first request, half-closes, and is never cancelled. The server
    keeps streaming to it (as the service does to a half-closed stream): the
    messages it is handed stay leased by a stream nobody reads, for the whole
    60 s stream ack deadline. Measured against the emulator: 8 of 20 immediate
    cancels left such a stream open. When the future is done the consumer
    thread has finished (it is joined during shutdown), so the call, if one was
    opened, is there to cancel. Private attributes, read defensively: if the
    library changes, this does nothing.
    """
    manager = getattr(future, "_StreamingPullFuture__manager", None)  # the future's private (mangled) manager
    rpc = getattr(manager, "_rpc", None)
    if rpc is None:
        return

    def cancel_call(_: Any) -> None:
        call = getattr(rpc, "call", None)
        if call is not None:
            call.cancel()

    future.add_done_callback(cancel_call)
