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
from ._config import ConfigError, Settings, setting_error
from ._push_audit import audit, report_push_endpoints
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

        Push endpoints already registered on *app* are audited here; those
        registered later are audited in each worker (see ``_push_audit``).

        :raises ConfigError: if a setting is invalid, or a push endpoint already
            registered can never accept a push (the message lists each one).
        :raises RuntimeError: if cloudclients is already registered on *app*.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"cloudclients is already registered on app {app.name!r}. Call "
                "init_app(app) once per app; to reach its clients use "
                "cloudclients.current_registry() or CloudClients.get_registry(app)."
            )
        settings = Settings.from_mapping(app.config)
        if settings.credentials_file and not (settings.pubsub_emulator and settings.storage_emulator):
            _check_key_file(app, settings.credentials_file)  # only when some client will use it
        findings = audit(app, settings)  # the endpoints registered so far; later ones: report_push_endpoints
        fatal = [f.message for f in findings if f.fatal]
        if fatal:
            raise ConfigError("\n".join(fatal))
        _warn_about_push_settings(app, settings)
        registry = ClientRegistry.from_settings(settings, name=app.name)
        state = CloudClientsState(settings, registry, self)
        for finding in findings:
            if state.first_report(finding.message):
                log.warning("cloudclients: %s", finding.message)
        state.check_endpoints = lambda: report_push_endpoints(app, state)
        app.extensions[EXTENSION_KEY] = state
        app.before_request(lambda: _audit_once(state))
        app.before_request(lambda: start_on_request(state))
        app.after_request(_publish.after_request)
        app.teardown_appcontext(_publish.teardown)
        app.cli.add_command(cli)
        if settings.exit_handlers:
            install_exit_handlers(registry)

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


def _check_key_file(app: Flask, path: str) -> None:
    # Parsing the key needs google-auth, which _config (a leaf) does not import.
    from ._google.credentials import key_file_problem

    problem = key_file_problem(path)
    if problem is not None:
        raise setting_error("credentials_file", app.config, problem)


def _warn_about_push_settings(app: Flask, settings: Settings) -> None:
    if settings.push_auth == "platform":
        log.warning(
            "cloudclients: push endpoints of app %r accept requests without checking a token "
            "(CLOUDCLIENTS_PUSH_AUTH=platform): Cloud Run IAM (--no-allow-unauthenticated), IAP or a gateway "
            "must authenticate every request", app.name,
        )
    elif settings.push_auth in ("oidc", "oidc_or_emulator") and settings.push_audience is None:
        emulated = settings.push_auth == "oidc_or_emulator" and settings.pubsub_emulator
        log.warning(
            "cloudclients: CLOUDCLIENTS_PUSH_AUTH=%r without CLOUDCLIENTS_PUSH_AUDIENCE: every push endpoint of app "
            "%r must pass its own audience= to @push_endpoint%s; endpoints without one %s. Fix: set "
            "CLOUDCLIENTS_PUSH_AUDIENCE (usually the endpoint URL) if one audience serves them all",
            settings.push_auth, app.name,
            " (against the emulator, pushes to an endpoint without one pass and their tokens are not checked)"
            if emulated else "",
            "will refuse every push in production" if emulated else "can never accept a push and are reported",
        )


def _audit_once(state: CloudClientsState) -> None:
    # Routes are complete once the app serves: report, once per process, the
    # push endpoints registered after init_app that can never accept anything
    # (before Pub/Sub retries their 500s forever).
    if not state.audited:
        state.audited_pid = os.getpid()
        state.check_endpoints()
