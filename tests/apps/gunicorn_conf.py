"""gunicorn config for the tests: record the master's registry stats at exit."""

from __future__ import annotations

import json
import os
from typing import Any


def on_exit(server: Any) -> None:
    """Runs in the master after the workers stopped: dump its registry stats."""
    from cloudclients import CloudClients
    from tests.apps.web import app

    path = os.environ.get("CC_MASTER_STATS")
    if path:
        with open(path, "w") as fh:
            json.dump({"pid": os.getpid(), "stats": CloudClients.get_registry(app).stats()}, fh)
