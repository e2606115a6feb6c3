"""Load and serve the ports of Google's samples (examples/samples/) the way their users do: settings
in the environment, the module imported (it builds its app at import, as the samples do), gunicorn on
loopback. Public cloudclients names only — these tests are what a user of the library would write."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

from cloudclients import CloudClients
from tests import servers
from tests.servers import Server


def module_name(port: str) -> str:
    return f"examples.samples.{port}.main"


@contextlib.contextmanager
def imported(port: str) -> Iterator[ModuleType]:
    """Import ``examples.samples.<port>.main`` afresh (reading the current environment), and close
    its clients afterwards."""
    name = module_name(port)
    sys.modules.pop(name, None)
    module = importlib.import_module(name)
    try:
        yield module
    finally:
        CloudClients.get_registry(module.app).close(timeout=5)
        sys.modules.pop(name, None)


@contextlib.contextmanager
def gunicorn(port: str, env: dict[str, str], *args: str) -> Iterator[Server]:
    """Serve the port with ``gunicorn <args>`` on a free loopback port until the block exits,
    unbuffered as on Cloud Run (the samples have no readiness route: ready once it listens)."""
    with servers.gunicorn(args, {**env, "PYTHONUNBUFFERED": "1"}, app=f"{module_name(port)}:app",
                          ready=None) as server:
        yield server
