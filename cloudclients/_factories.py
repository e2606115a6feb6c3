"""Builds Google Cloud clients from :class:`~cloudclients._config.Settings`.

The only module that imports ``google.cloud`` (and ``grpc``) at run time.

Emulator mode is applied *explicitly*: an insecure channel to the configured
host and ``AnonymousCredentials``, instead of relying on the client libraries'
own ``PUBSUB_EMULATOR_HOST`` / ``STORAGE_EMULATOR_HOST`` handling (upstream
plans to remove it, and it reads the environment at construction time, so a
value set in ``app.config`` would otherwise be half-applied).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

import google.auth
import grpc
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core import retry as api_retry
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import pubsub_v1, storage
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport, PublisherRestTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport, SubscriberRestTransport

from ._config import Settings
from ._forkgate import GATE, ensure_fork_hooks
from ._gevent import prepare_grpc

__all__ = [
    "ClientSpec",
    "TrackingPublisher",
    "builtin_clients",
    "grpc_unusable_after_fork",
    "start_streaming_pull",
]

log = logging.getLogger("cloudclients")

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]

# The options the generated transports use for the real service, plus a short
# reconnect backoff: gRPC's default grows to 120 s, so after an emulator restart
# (or any outage of the host we dial) a channel could stay in TRANSIENT_FAILURE,
# failing every call, for minutes after the server is back.
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

_RETRYABLE = (
    api_exceptions.Aborted,
    api_exceptions.Cancelled,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.ResourceExhausted,
    api_exceptions.ServiceUnavailable,
    api_exceptions.Unknown,
)

# -- gRPC and fork ---------------------------------------------------------------
#
# gRPC core survives fork() only with its fork support on. grpcio's own
# default turns it on in core, but GRPC_ENABLE_FORK_SUPPORT=0 (read once, when
# grpc initialises) turns it off, and then a child of a process that had used
# gRPC cannot use gRPC at all: its event-engine threads are gone, a fresh
# channel hangs forever and the process aborts at exit. Rebuilding the client
# is not enough there, so such a child talks to Pub/Sub over the REST
# transport (plain HTTP/1.1 through requests), which does not touch gRPC core.
#
# The pids that built a gRPC client are recorded in a set. Memory is copied by
# fork(), hooks or not, so a child (even one made by a C-level fork) can tell
# that an ancestor used gRPC: the set holds a pid that is not its own.

_FORK_SUPPORT_DISABLED = os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "").strip().lower() in {
    "0", "false", "no", "off",
}
_GRPC_USERS: set[int] = set()


def grpc_unusable_after_fork() -> bool:
    """True when this process is a fork child that must not use gRPC.

    That is: gRPC fork support is disabled and an ancestor process had built a
    gRPC client before forking.
    """
    me = os.getpid()
    return _FORK_SUPPORT_DISABLED and any(pid != me for pid in _GRPC_USERS)


def _transport_kind() -> str:
    if grpc_unusable_after_fork():
        log.warning(
            "cloudclients: pid %d was forked from a process that used gRPC while "
            "GRPC_ENABLE_FORK_SUPPORT=0; using the Pub/Sub REST transport in this "
            "process (streaming pull is unavailable here). Fork before creating "
            "clients, or unset GRPC_ENABLE_FORK_SUPPORT, to keep gRPC.",
            os.getpid(),
        )
        return "rest"
    _GRPC_USERS.add(os.getpid())
    return "grpc"


def _init_grpc_gevent() -> None:
    from grpc.experimental import gevent as grpc_gevent  # imports gevent: only when it is in use

    grpc_gevent.init_gevent()


def _prepare_grpc() -> None:
    # Under gevent monkey-patching, gRPC must be switched to gevent mode before
    # it creates anything in this process (see _gevent).
    prepare_grpc(_init_grpc_gevent, grpc_used_here=os.getpid() in _GRPC_USERS)


def _anonymous() -> Credentials:
    return AnonymousCredentials()  # type: ignore[no-untyped-call]


def _authorized_session(creds: Credentials) -> requests.Session:
    return AuthorizedSession(creds)  # type: ignore[no-untyped-call]


def _credentials(settings: Settings) -> Credentials:
    path = settings.credentials_file
    if not path:
        default, _ = google.auth.default(scopes=SCOPES)
        return default
    with open(path, encoding="utf-8") as fh:
        kind = json.load(fh).get("type")  # validated by Settings: a dict with a string "type"
    # Load the two common types explicitly (google-auth deprecates the generic
    # loader because it trusts whatever type the file claims).
    if kind == "service_account":
        return cast(Credentials, service_account.Credentials.from_service_account_file(path, scopes=SCOPES))  # type: ignore[no-untyped-call]
    if kind == "authorized_user":
        return cast(Credentials, user_credentials.Credentials.from_authorized_user_file(path, scopes=SCOPES))  # type: ignore[no-untyped-call]
    # Workload identity federation, impersonation, ...: the operator chose this
    # file in their own configuration, which is what the deprecation asks about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        creds, _ = google.auth.load_credentials_from_file(path, scopes=SCOPES)  # type: ignore[no-untyped-call]
    return cast(Credentials, creds)


class _GateInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Runs every unary call inside the fork gate (see ``_forkgate``)."""

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        with GATE.call():
            return continuation(client_call_details, request)


_INTERCEPTOR = _GateInterceptor()


def _gated(channel: grpc.Channel) -> grpc.Channel:
    ensure_fork_hooks()  # after gRPC made its first channel: see _forkgate
    return grpc.intercept_channel(channel, _INTERCEPTOR)


def _pubsub_transport(settings: Settings, grpc_cls: Any, rest_cls: Any) -> Any:
    """A Pub/Sub transport *instance* (gRPC, or REST in a child that cannot use gRPC).

    Passing an instance makes the client ignore ``PUBSUB_EMULATOR_HOST``, which
    would otherwise override our settings (and open a gRPC channel even for REST).
    """
    _prepare_grpc()
    host = settings.pubsub_emulator_host
    if _transport_kind() == "rest":
        if host is not None:
            return rest_cls(host=f"http://{host}", credentials=_anonymous())
        return rest_cls(credentials=_credentials(settings))
    if host is not None:
        # A channel *instance* makes the transport ignore credentials entirely
        # (a channel factory would still look up Application Default Credentials).
        return grpc_cls(host=host, channel=_gated(grpc.insecure_channel(host, options=_CHANNEL_OPTIONS)))

    def channel(host: str, **kwargs: Any) -> grpc.Channel:
        # A channel *factory*: the transport still applies credentials, scopes
        # and TLS exactly as it would on its own; we only add the fork gate.
        return _gated(grpc_cls.create_channel(host, **kwargs))

    return grpc_cls(credentials=_credentials(settings), channel=channel)


# -- publisher ---------------------------------------------------------------------


class TrackingPublisher(pubsub_v1.PublisherClient):  # type: ignore[misc]
    """A ``PublisherClient`` that remembers its outstanding publish futures.

    ``PublisherClient.publish`` returns before anything is sent and ``stop()``
    does not wait for in-flight batches, so a plain client loses messages at
    shutdown. This subclass keeps every future until it resolves, so
    :func:`close_publisher` can wait for all of them, and counts outcomes.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cc_lock = threading.Lock()
        self._cc_pending: set[concurrent.futures.Future[str]] = set()
        self.cc_published = 0
        self.cc_failed = 0
        self.cc_stopped = False

    def publish(
        self, topic: str, data: bytes, ordering_key: str = "", **kwargs: Any
    ) -> Any:
        """Publish like ``PublisherClient.publish`` and track the future."""
        future = super().publish(topic, data, ordering_key=ordering_key, **kwargs)
        with self._cc_lock:
            self._cc_pending.add(future)
        future.add_done_callback(self._cc_done)
        return future

    def _cc_done(self, future: concurrent.futures.Future[str]) -> None:
        with self._cc_lock:
            self._cc_pending.discard(future)
            if future.cancelled() or future.exception() is not None:
                self.cc_failed += 1
            else:
                self.cc_published += 1

    def outstanding(self) -> list[concurrent.futures.Future[str]]:
        """Return the futures not resolved yet."""
        with self._cc_lock:
            return list(self._cc_pending)

    def metrics(self) -> dict[str, int]:
        """Publishes confirmed, failed and still outstanding in this process."""
        with self._cc_lock:
            return {"published": self.cc_published, "failed": self.cc_failed, "outstanding": len(self._cc_pending)}


def build_publisher(settings: Settings) -> TrackingPublisher:
    """Build the process's publisher from *settings*."""
    retry = api_retry.Retry(
        initial=0.1,
        maximum=min(5.0, settings.publish_timeout),
        multiplier=1.3,
        predicate=api_retry.if_exception_type(*_RETRYABLE),
        timeout=settings.publish_timeout,
    )
    return TrackingPublisher(
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
        transport=_pubsub_transport(settings, PublisherGrpcTransport, PublisherRestTransport),
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


# -- subscriber --------------------------------------------------------------------


def build_subscriber(settings: Settings) -> pubsub_v1.SubscriberClient:
    """Build the process's subscriber from *settings*."""
    return pubsub_v1.SubscriberClient(
        transport=_pubsub_transport(settings, SubscriberGrpcTransport, SubscriberRestTransport)
    )


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
    return client.subscribe(
        subscription,
        callback,
        flow_control=pubsub_v1.types.FlowControl(
            max_messages=max_messages, max_bytes=max_bytes, max_lease_duration=max_lease_duration
        ),
        scheduler=ThreadScheduler(executor=executor),
        await_callbacks_on_shutdown=True,
    )


def close_subscriber(client: pubsub_v1.SubscriberClient, timeout: float) -> None:
    """Close the subscriber's transport (open streaming pulls end)."""
    client.close()


# -- storage -----------------------------------------------------------------------


def _session(settings: Settings, session: requests.Session) -> requests.Session:
    # requests' default pool keeps 10 connections per host: threaded workers
    # exhaust it and urllib3 logs "Connection pool is full, discarding connection".
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=4, pool_maxsize=settings.storage_pool_size
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def build_storage(settings: Settings) -> storage.Client:
    """Build the process's Cloud Storage client from *settings*."""
    _prepare_grpc()  # before the first client of the process, whichever it is
    if settings.storage_emulator_host is not None:
        return storage.Client(
            project=settings.project,
            credentials=_anonymous(),
            client_options={"api_endpoint": settings.storage_emulator_host},
            _http=_session(settings, requests.Session()),
        )
    creds = _credentials(settings)
    return storage.Client(
        project=settings.project,
        credentials=creds,
        _http=_session(settings, _authorized_session(creds)),
    )


def close_storage(client: storage.Client, timeout: float) -> None:
    """Close the Storage client's HTTP session."""
    client.close()


# -- health pings (ClientRegistry.ping) ----------------------------------------------
#
# One cheap, read-only request per client, without retries, bounded by the
# timeout. An answer that proves the service was reached and our credentials
# accepted counts as reachable even when IAM refuses the listing itself
# (a publisher-only service account may not list topics).

_REACHED = (api_exceptions.PermissionDenied, api_exceptions.NotFound)


def _ping_pubsub(settings: Settings, list_method: str) -> Callable[[Any, float], None]:
    """A ping that lists one topic or subscription (*list_method*) of the project."""
    request = {"project": f"projects/{settings.project}", "page_size": 1}

    def ping(client: Any, timeout: float) -> None:
        with contextlib.suppress(*_REACHED):
            getattr(client, list_method)(request=request, retry=None, timeout=timeout)  # GAPIC: sent at once

    return ping


def _ping_storage(client: Any, timeout: float) -> None:
    with contextlib.suppress(*_REACHED):
        # The iterator is lazy: taking one page makes the request.
        next(iter(client.list_buckets(max_results=1, page_size=1, retry=None, timeout=timeout).pages), None)


# -- the built-in set ----------------------------------------------------------------


class ClientSpec(NamedTuple):
    """What :meth:`cloudclients.ClientRegistry.from_settings` registers for one kind."""

    factory: Callable[[], Any]
    close: Callable[[Any, float], None]
    metrics: Callable[[Any], Mapping[str, int]] | None
    ping: Callable[[Any, float], None]


def publisher_metrics(client: TrackingPublisher) -> dict[str, int]:
    """Counters for the registry's stats: publishes confirmed, failed, outstanding."""
    return client.metrics()


def builtin_clients(settings: Settings) -> dict[str, ClientSpec]:
    """Return ``{kind: ClientSpec}`` for the publisher, the subscriber and the Storage client."""
    return {
        "publisher": ClientSpec(lambda: build_publisher(settings), close_publisher, publisher_metrics,
                                _ping_pubsub(settings, "list_topics")),
        "subscriber": ClientSpec(lambda: build_subscriber(settings), close_subscriber, None,
                                 _ping_pubsub(settings, "list_subscriptions")),
        "storage": ClientSpec(lambda: build_storage(settings), close_storage, None, _ping_storage),
    }
