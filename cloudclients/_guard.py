"""A switch the pytest plugin turns on: clients must not reach production from a test run.

While it is on, building a client that would use real Google credentials (no
emulator host for it) raises instead of quietly picking up the developer's
Application Default Credentials. Framework-free and import-light on purpose:
the plugin sets it before any Google library is imported.
"""

from __future__ import annotations

__all__ = ["check", "refuse_production"]

_reason: str | None = None


def refuse_production(reason: str | None) -> None:
    """Refuse real credentials from now on, with *reason* as the fix (``None``: allow again)."""
    global _reason  # noqa: PLW0603 - one switch for the process
    _reason = reason


def check(what: str) -> None:
    """Raise if real credentials are refused (``what``: the client about to use them).

    :raises RuntimeError: naming *what* and the fix.
    """
    if _reason is not None:
        raise RuntimeError(f"cloudclients: {what} would use real Google credentials during a test run. {_reason}")
