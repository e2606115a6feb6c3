"""Per-app state, and the helpers that look it up: ``get_publisher()`` and friends.

The per-app floor of the package's import graph, between the features and the
framework-free core: it imports only core modules (``_background``,
``_clients``, ``_config``, ``_oidc``: what a :class:`CloudClientsState` holds)
and never a feature or ``_flask``. Every feature (publishing, receiving, the
CLI, health checks) finds what it needs here, and ``init_app`` (in ``_flask``,
at the top of the graph) is the only place that creates it.

One app, one :class:`CloudClientsState`, under one ``app.extensions`` key.
The state lives as long as the app; the clients in its registry live once per
process (built on first use, rebuilt after a fork). Nothing is cached per
request: the registry's lock-free fast path (with its pid check) is what a
view pays for ``get_publisher()``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, current_app

from ._background import SubscriptionGroup
from ._clients import ClientRegistry
from ._config import Settings
from ._oidc import PushTokenVerifier

if TYPE_CHECKING:
    from google.cloud import storage
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

__all__ = [
    "EXTENSION_KEY",
    "CloudClientsState",
    "all_states",
    "app_state",
    "current_registry",
    "get_client",
    "get_publisher",
    "get_storage",
    "get_subscriber",
]

EXTENSION_KEY = "cloudclients"

_OUTSIDE = (
    "{what} needs a Flask application context: call it inside a view, a CLI "
    "command or a `with app.app_context():` block."
)


@dataclass(eq=False)
class CloudClientsState:
    """Everything cloudclients keeps for one app, in ``app.extensions["cloudclients"]``.

    :ivar settings: the validated, frozen settings.
    :ivar registry: the app's clients (one of each kind per process).
    :ivar extension: the :class:`~cloudclients.CloudClients` object that initialised the app.
    :ivar subscriptions: the app's background subscriptions, stopped when the registry closes.
    :ivar verifier: checks push tokens (caches Google's certificates; no connection).
    """

    settings: Settings
    registry: ClientRegistry
    extension: Any
    subscriptions: SubscriptionGroup = field(default_factory=SubscriptionGroup)
    verifier: PushTokenVerifier = field(init=False)
    #: The pid of the process that checked the app's push endpoints (on its first
    #: request). A pid, not a flag: a forked child inherits it and checks again.
    audited_pid: int | None = field(default=None, init=False)
    #: Logs what the push-endpoint audit finds now (set by ``init_app``; see ``_push_audit``).
    check_endpoints: Callable[[], None] = field(default=lambda: None, init=False)
    # The push-endpoint findings logged, and the pid of the process that logged
    # them: a forked child starts with none, its log is its own.
    _reported: tuple[int, set[str]] = field(default_factory=lambda: (0, set()), init=False)

    def __post_init__(self) -> None:
        self.verifier = PushTokenVerifier(self.settings.push_certs_url)
        self.registry.on_close(self.subscriptions.stop_all)
        _STATES.add(self)

    @property
    def audited(self) -> bool:
        """Whether this process checked the app's push endpoints (on its first request)."""
        return self.audited_pid == os.getpid()

    def first_report(self, finding: str) -> bool:
        """Whether *finding* is new in this process (and remember it): each
        push-endpoint finding is logged once per process."""
        pid = os.getpid()
        if self._reported[0] != pid:
            self._reported = (pid, set())
        if finding in self._reported[1]:
            return False
        self._reported[1].add(finding)
        return True


# Every app's state, for the calls that act on all apps of the process
# (gunicorn hooks that know no app). Weak: a dropped app's state goes with it.
_STATES: weakref.WeakSet[CloudClientsState] = weakref.WeakSet()


def all_states() -> list[CloudClientsState]:
    """The state of every initialised app of this process."""
    return list(_STATES)


def app_state(app: Flask | None = None, *, what: str = "cloudclients") -> CloudClientsState:
    """Return the state of *app* (default: the current app).

    :param what: the caller's name, for the error message.
    :raises RuntimeError: outside an app context without *app*, or when
        cloudclients is not initialised on the app.
    """
    if app is None:
        try:
            app = cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
        except RuntimeError:  # Flask's "Working outside of application context."
            raise RuntimeError(_OUTSIDE.format(what=what)) from None
    try:
        return cast(CloudClientsState, app.extensions[EXTENSION_KEY])
    except KeyError:
        raise RuntimeError(
            f"cloudclients is not initialised on app {app.name!r}. Call "
            "CloudClients(app) or cloudclients.init_app(app) when creating the app."
        ) from None


def get_client(name: str) -> Any:
    """Return the client *name* of the current app, built on first use in this process.

    :raises RuntimeError: outside an application context, or when cloudclients
        is not initialised on the app.
    :raises KeyError: if no client is registered under *name*.
    """
    return app_state(what="cloudclients.get_client()").registry.get(name)


def get_publisher() -> PublisherClient:
    """Return this process's Pub/Sub ``PublisherClient`` for the current app.

    :raises RuntimeError: outside an application context.
    """
    return cast("PublisherClient", app_state(what="cloudclients.get_publisher()").registry.get("publisher"))


def get_subscriber() -> SubscriberClient:
    """Return this process's Pub/Sub ``SubscriberClient`` for the current app.

    :raises RuntimeError: outside an application context.
    """
    return cast("SubscriberClient", app_state(what="cloudclients.get_subscriber()").registry.get("subscriber"))


def get_storage() -> storage.Client:
    """Return this process's Cloud Storage ``Client`` for the current app.

    :raises RuntimeError: outside an application context.
    """
    return cast("storage.Client", app_state(what="cloudclients.get_storage()").registry.get("storage"))


def current_registry() -> ClientRegistry:
    """Return the :class:`~cloudclients.ClientRegistry` of the current app.

    :raises RuntimeError: outside an application context.
    """
    return app_state(what="cloudclients.current_registry()").registry
