"""Apps that the tests serve with real servers (gunicorn, uWSGI) or run as scripts."""

from __future__ import annotations

import os

from flask import Flask

from cloudclients import CloudClients


def app_from_environment(name: str) -> Flask:
    """A Flask app with cloudclients, configured from the ``CLOUDCLIENTS_*`` environment
    variables the test sets for the server (besides the standard emulator variables)."""
    app = Flask(name)
    app.config.update({
        key: value for key, value in os.environ.items()
        if key.startswith("CLOUDCLIENTS_") and not key.startswith("CLOUDCLIENTS_TEST_")
    })
    CloudClients(app)
    return app
