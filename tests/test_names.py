"""Public classes print as cloudclients.X (tracebacks, reprs, docs), and pickle back."""

from __future__ import annotations

import pickle

import cloudclients


def test_public_classes_print_as_cloudclients_names() -> None:
    """Every public class (ConfigError and friends) says cloudclients.X, never a private module."""
    for name in cloudclients.__all__:
        obj = getattr(cloudclients, name)
        if isinstance(obj, type):
            assert obj.__module__ == "cloudclients", name
            assert getattr(cloudclients, obj.__qualname__) is obj


def test_errors_survive_pickling() -> None:
    """A ConfigError crossing a process boundary (multiprocessing) comes back as itself."""
    error = pickle.loads(pickle.dumps(cloudclients.ConfigError("CLOUDCLIENTS_X='y' is wrong. Fix: z.")))
    assert type(error) is cloudclients.ConfigError and str(error).startswith("CLOUDCLIENTS_X")
