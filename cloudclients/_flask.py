"""Flask glue: the ``CloudClients`` extension and the per-request helpers.

Thin on purpose: settings come from ``_config``, clients from the registry.
Per-app state lives in ``app.extensions["cloudclients"]`` (the extension
object never stores the app, so one ``CloudClients()`` can serve many apps),
per-request state in one namespaced attribute on ``g``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, current_app, has_app_context

# Flask's app-context ContextVar (Flask >= 2.3), read directly for speed.
from flask.globals import _cv_app

from . import _publish
from ._config import Settings
from ._registry import ClientRegistry
from ._shutdown import install_exit_handlers

if TYPE_CHECKING:
    from google.cloud import storage
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

__all__ = [
    "CloudClients",
    "CloudClientsState",
    "current_registry",
    "get_client",
    "get_publisher",
    "get_storage",
    "get_subscriber",
]

log = logging.getLogger("cloudclients")

EXTENSION_KEY = "cloudclients"
_G_KEY = "_cloudclients_clients"


@dataclass(frozen=True)
class CloudClientsState:
    """What ``init_app`` stores in ``app.extensions["cloudclients"]``."""

    settings: Settings
    registry: ClientRegistry
    extension: CloudClients


class CloudClients:
    """Flask extension: one set of Google Cloud clients per process, per app.

    ::

        cc = CloudClients()
        cc.init_app(app)      # or CloudClients(app)

    ``init_app`` reads and validates every ``CLOUDCLIENTS_*`` setting (raising
    :class:`~cloudclients.ConfigError` on the first bad one) and prepares a
    :class:`~cloudclients.ClientRegistry`. It creates **no** client: a
    gunicorn ``--preload`` master never opens a gRPC channel; each worker
    builds its own clients on first use.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Validate settings and register cloudclients on *app*.

        :raises ConfigError: if a setting is invalid or the project is missing.
        :raises RuntimeError: if cloudclients is already registered on *app*.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"cloudclients is already registered on app {app.name!r}. Call "
                "init_app(app) once per app; to reach its clients use "
                "cloudclients.current_registry() or CloudClients.get_registry(app)."
            )
        settings = Settings.from_mapping(app.config)
        registry = ClientRegistry.from_settings(settings, name=app.name)
        app.extensions[EXTENSION_KEY] = CloudClientsState(settings, registry, self)
        app.teardown_appcontext(_teardown)
        app.after_request(_publish._after_request)
        app.teardown_appcontext(_publish._teardown)
        from ._cli import cli  # deferred: _cli imports this module

        app.cli.add_command(cli)
        if settings.exit_handlers:
            install_exit_handlers(registry, settings.shutdown_timeout)

    @staticmethod
    def get_state(app: Flask | None = None) -> CloudClientsState:
        """Return the state for *app* (default: the current app).

        :raises RuntimeError: if cloudclients was not initialised on the app,
            or no app is given and there is no app context.
        """
        if app is None:
            if not has_app_context():
                raise RuntimeError(_OUTSIDE.format(what="CloudClients.get_state()"))
            app = cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
        return _state(app)

    @classmethod
    def get_registry(cls, app: Flask | None = None) -> ClientRegistry:
        """Return the :class:`ClientRegistry` of *app* (default: the current app)."""
        return cls.get_state(app).registry

    @classmethod
    def get_settings(cls, app: Flask | None = None) -> Settings:
        """Return the frozen :class:`Settings` of *app* (default: the current app)."""
        return cls.get_state(app).settings


_OUTSIDE = (
    "{what} needs a Flask application context: call it inside a view, a CLI "
    "command or a `with app.app_context():` block."
)


def _state(app: Flask) -> CloudClientsState:
    try:
        return cast(CloudClientsState, app.extensions[EXTENSION_KEY])
    except KeyError:
        raise RuntimeError(
            f"cloudclients is not initialised on app {app.name!r}. Call "
            "CloudClients(app) or cloudclients.init_app(app) when creating the app."
        ) from None


def get_client(name: str) -> Any:
    """Return the client *name* for the current app, cached on ``g`` for the
    request (or app context).

    :raises RuntimeError: outside an application context, or when cloudclients
        is not initialised on the app.
    :raises KeyError: if no client is registered under *name*.
    """
    # Fast path: read the app context straight from Flask's ContextVar instead
    # of going through the `g`/`current_app` proxies (each proxy access costs a
    # ContextVar lookup plus a wrapper call). Views call this many times.
    ctx = _cv_app.get(None)
    if ctx is None:
        raise RuntimeError(_OUTSIDE.format(what=f"cloudclients.get_client({name!r})"))
    namespace = ctx.g.__dict__
    cache: dict[str, Any] | None = namespace.get(_G_KEY)
    if cache is None:
        cache = namespace[_G_KEY] = {}
    client = cache.get(name)
    if client is None:
        client = cache[name] = _state(ctx.app).registry.get(name)
    return client


def get_publisher() -> PublisherClient:
    """Return this process's Pub/Sub ``PublisherClient`` (cached on ``g``).

    :raises RuntimeError: outside an application context.
    """
    return cast("PublisherClient", get_client("publisher"))


def get_subscriber() -> SubscriberClient:
    """Return this process's Pub/Sub ``SubscriberClient`` (cached on ``g``).

    :raises RuntimeError: outside an application context.
    """
    return cast("SubscriberClient", get_client("subscriber"))


def get_storage() -> storage.Client:
    """Return this process's Cloud Storage ``Client`` (cached on ``g``).

    :raises RuntimeError: outside an application context.
    """
    return cast("storage.Client", get_client("storage"))


def current_registry() -> ClientRegistry:
    """Return the :class:`ClientRegistry` of the current app.

    :raises RuntimeError: outside an application context.
    """
    return CloudClients.get_registry()


def _teardown(exc: BaseException | None) -> None:
    # Clients are process-wide and outlive the request: only forget the
    # per-request references. Teardown must never raise.
    try:
        ctx = _cv_app.get(None)
        if ctx is not None:
            ctx.g.__dict__.pop(_G_KEY, None)
    except Exception:  # pragma: no cover - defensive
        log.error("cloudclients: teardown failed", exc_info=True)
