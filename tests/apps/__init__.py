"""Apps that the tests serve with real servers (gunicorn, uWSGI) or run as scripts."""

from __future__ import annotations

from flask import Flask

from cloudclients import CloudClients


def app_from_environment(name: str) -> Flask:
    """A Flask app with cloudclients, configured by the environment the test gives the server
    (``CLOUDCLIENTS_*`` and the standard emulator variables, which cloudclients reads itself)."""
    app = Flask(name)
    CloudClients(app)
    return app
