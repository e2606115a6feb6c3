"""The ``CloudClients`` extension: ``init_app`` wires every feature into an app.

The top of the package's import graph: ``init_app`` creates the app's
:class:`~cloudclients.CloudClientsState` (``_state``) and registers the
publish tracking (``_publish``), the push-endpoint audit (``_push``), the start
of background subscriptions on a process's first request (``_subscriber``),
the CLI (``_cli``) and the exit handlers (``_shutdown``). Features never
import this module; they find the state in ``_state``.
"""

from __future__ import annotations

import logging
import os

from flask import Flask

from . import _publish
from ._cli import cli
from ._clients import ClientRegistry
from ._config import Settings
from ._push import audit_push_endpoints
from ._shutdown import install_exit_handlers
from ._state import EXTENSION_KEY, CloudClientsState, app_state
from ._subscriber import start_on_request

__all__ = ["CloudClients"]

log = logging.getLogger("cloudclients")


class CloudClients:
    """Flask extension: one set of Google Cloud clients per process, per app.

    ::

        cc = CloudClients()
        cc.init_app(app)      # or CloudClients(app)

    ``init_app`` reads and validates every ``CLOUDCLIENTS_*`` setting (raising
    :class:`~cloudclients.ConfigError` on the first bad one) and prepares a
    :class:`~cloudclients.ClientRegistry`. It creates **no** client: a
    gunicorn ``--preload`` master never opens a gRPC channel; each worker
    builds its own clients on first use. The extension object keeps no
    reference to the app, so one ``CloudClients()`` can serve many apps.
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
        state = CloudClientsState(settings, registry, self)
        app.extensions[EXTENSION_KEY] = state
        app.before_request(lambda: _audit_once(app, state))
        app.before_request(lambda: start_on_request(state))
        app.after_request(_publish.after_request)
        app.teardown_appcontext(_publish.teardown)
        app.cli.add_command(cli)
        if settings.exit_handlers:
            install_exit_handlers(registry)
        if settings.push_auth == "platform":
            log.warning(
                "cloudclients: push endpoints of app %r accept requests without checking a token "
                "(CLOUDCLIENTS_PUSH_AUTH=platform): Cloud Run IAM (--no-allow-unauthenticated), IAP or a gateway "
                "must authenticate every request", app.name,
            )

    @staticmethod
    def get_state(app: Flask | None = None) -> CloudClientsState:
        """Return the state for *app* (default: the current app).

        :raises RuntimeError: if cloudclients was not initialised on the app,
            or no app is given and there is no app context.
        """
        return app_state(app, what="CloudClients.get_state()")

    @classmethod
    def get_registry(cls, app: Flask | None = None) -> ClientRegistry:
        """Return the :class:`~cloudclients.ClientRegistry` of *app* (default: the current app)."""
        return cls.get_state(app).registry

    @classmethod
    def get_settings(cls, app: Flask | None = None) -> Settings:
        """Return the frozen :class:`~cloudclients.Settings` of *app* (default: the current app)."""
        return cls.get_state(app).settings


def _audit_once(app: Flask, state: CloudClientsState) -> None:
    # Routes are complete once the app serves: report, once per process, the
    # push endpoints that can never accept anything (before Pub/Sub retries
    # their 500s forever).
    if state.audited:
        return
    state.audited_pid = os.getpid()
    try:
        for problem in audit_push_endpoints(app, repair=True):
            log.error("cloudclients: %s", problem)
    except Exception:  # a request must not fail because of the audit
        log.error("cloudclients: checking the push endpoints failed", exc_info=True)
