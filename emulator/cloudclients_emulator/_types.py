"""The ``google.pubsub.v1`` message types, without the client library around them.

The types live in google-cloud-pubsub's ``google.pubsub_v1.types``. Importing
them the plain way first runs ``google/pubsub_v1/__init__.py``, which loads
both generated clients, google-api-core, google-auth and requests: about
0.2 s and 20 MB the emulator never uses, a third of its start-up time.

So the parent package is stood in for by an empty module object carrying the
real ``__path__`` while the types are imported, and removed again at once: a
later ``import google.pubsub_v1`` in the same process (a test importing the
client library next to an in-process emulator) runs the real ``__init__``,
which finds the already-imported types modules in ``sys.modules`` and reuses
them.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

__all__ = ["pubsub"]


def _load_types() -> ModuleType:
    parent = "google.pubsub_v1"
    if parent in sys.modules:  # the client library is loaded already: nothing to save
        from google.pubsub_v1.types import pubsub as loaded

        return loaded
    spec = importlib.util.find_spec(parent)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("google-cloud-pubsub is not installed (the emulator takes its message types from it)")
    stand_in = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
    sys.modules[parent] = stand_in
    try:
        from google.pubsub_v1.types import pubsub as loaded
    finally:
        if sys.modules.get(parent) is stand_in:
            del sys.modules[parent]
    return loaded


pubsub = _load_types()
