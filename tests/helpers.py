"""Helpers shared by the tests (one copy of each)."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask

from cloudclients import ReceivedMessage

#: The ``make_app`` fixture (tests/conftest.py): ``make_app(**settings) -> Flask``.
MakeApp = Callable[..., Flask]

#: The ``push_app`` fixture (tests/conftest.py): ``push_app(**settings)`` -> an app with one push endpoint
#: at /push, and the messages it received.
PushApp = Callable[..., tuple[Flask, list[ReceivedMessage]]]


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll *predicate* until it is true or *timeout* seconds pass; return its last value.

    Use as ``assert wait_for(lambda: ..., 10), "what we waited for"``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
