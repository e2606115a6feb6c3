"""gunicorn settings for the example: preload the app, several workers and threads.

The master imports the app (cloudclients validates its settings there) but
never builds a client; each worker builds its own on first use and flushes
its publisher when it exits.
"""

from __future__ import annotations

import json
import logging
from typing import Any

# Flush outstanding publishes and close the worker's clients when it exits.
from cloudclients import gunicorn_worker_exit as worker_exit  # noqa: F401

preload_app = True
workers = 2
threads = 4
graceful_timeout = 15


def post_fork(server: Any, worker: Any) -> None:
    """Show cloudclients' lifecycle logs (client creation, shutdown flush) in the worker."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(process)d] [cloudclients] %(message)s"))
    cc_log = logging.getLogger("cloudclients")
    cc_log.addHandler(handler)
    cc_log.setLevel(logging.INFO)


def on_exit(server: Any) -> None:
    """In the master, at the very end: show that it never built a client."""
    from cloudclients import CloudClients
    from examples.orders_app import app

    stats = CloudClients.get_registry(app).stats()
    server.log.info("master registry stats: %s", json.dumps(stats))
