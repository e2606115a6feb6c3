"""The Storage client's HTTP session: bounded waits and fast failure when Storage is down.

google-cloud-storage waits up to 60 s per HTTP request and retries an
unreachable service for up to 120 s (measured: a view answered 500 after
105 s), far past gunicorn's default 30 s worker timeout — the worker is
SIGKILLed mid-request. Its timeouts and retries are per call argument, with no
client-wide setting, so the bound is applied where every request passes: the
session the client is given (JSON API and media uploads/downloads alike).

* Each request's timeout is capped at ``CLOUDCLIENTS_STORAGE_TIMEOUT``.
* A thread whose requests keep failing (connection errors, timeouts, 429/5xx)
  gets :class:`StorageUnavailableError` at the failure after which the
  library's next retry could not start within that timeout. The library
  backs off with random sleeps of up to 1, 2, 4 … s (at most 60 s); giving up
  only once the time is spent would let the last sleep overshoot it by tens of
  seconds (measured by simulation for a 10 s budget: median 15 s, 1 % over
  40 s). The error is not one of the library's retryable errors, so its retry
  loop ends there: a call against a dead service fails within the timeout.
* Against the Storage emulator, a refused connection fails at once with
  "emulator at URL not reachable — is it running?".

No Google imports: ``_google.storage`` combines this with google-auth's session.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

__all__ = ["BoundedSessionMixin", "StorageUnavailableError"]

_FAILING_STATUS = frozenset({429, 500, 502, 503, 504})


class StorageUnavailableError(RuntimeError):
    """Cloud Storage (or its emulator) did not answer within ``CLOUDCLIENTS_STORAGE_TIMEOUT``.

    Raised by the Storage client's calls instead of retrying for minutes.
    Unhandled in a view, Flask answers 500.
    """


@dataclass
class _Streak:
    """Consecutive failed requests of one thread."""

    since: float
    failures: int = 0


class BoundedSessionMixin:
    """Mixed into a ``requests.Session`` (or google-auth's ``AuthorizedSession``)."""

    cc_timeout: float = 10.0
    #: The emulator URL when Storage is emulated (refused connections fail at once).
    cc_emulator: str | None = None

    def cc_configure(self, timeout: float, emulator: str | None) -> None:
        self.cc_timeout = timeout
        self.cc_emulator = emulator
        self._cc_local = threading.local()

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        streak: _Streak | None = getattr(self._cc_local, "streak", None)
        started = time.monotonic()
        if streak is not None and started - streak.since >= self.cc_timeout:
            self._give_up(streak, started)  # belt and braces: the budget is already spent
        kwargs["timeout"] = _capped(kwargs.get("timeout"), self.cc_timeout)
        try:
            response = super().request(method, url, *args, **kwargs)  # type: ignore[misc]
        except (requests.ConnectionError, requests.Timeout) as exc:
            if self.cc_emulator is not None and _refused(exc):
                raise StorageUnavailableError(
                    f"Storage emulator at {self.cc_emulator} not reachable (connection refused) — is it running?"
                ) from None
            self._failed(streak, started)
            raise
        if response.status_code in _FAILING_STATUS:
            # Read the (small) error body now: streamed downloads otherwise keep the
            # connection checked out when the library turns the status into an exception.
            response.content  # noqa: B018
            try:
                self._failed(streak, started)
            except StorageUnavailableError:
                response.close()  # nobody will read it: give the connection back
                raise
        else:
            self._cc_local.streak = None
        return response

    def _failed(self, streak: _Streak | None, started: float) -> None:
        if streak is None:
            streak = self._cc_local.streak = _Streak(since=started)
        streak.failures += 1
        now = time.monotonic()
        # The library's next sleep is at most 2^(failures-1) s (storage's retry:
        # initial 1 s, multiplier 2, at most 60 s): stop when it could end past the budget.
        if now - streak.since + min(2.0 ** (streak.failures - 1), 60.0) > self.cc_timeout:
            self._give_up(streak, now)

    def _give_up(self, streak: _Streak, now: float) -> None:
        self._cc_local.streak = None  # the next call starts afresh
        raise StorageUnavailableError(
            f"Cloud Storage{self._where()} did not answer: {streak.failures} failed attempt(s) in "
            f"{now - streak.since:.1f} s (CLOUDCLIENTS_STORAGE_TIMEOUT={self.cc_timeout:g}); "
            "giving up instead of retrying for minutes."
        )

    def _where(self) -> str:
        return f" emulator at {self.cc_emulator}" if self.cc_emulator else ""


def _capped(timeout: Any, cap: float) -> Any:
    if timeout is None:
        return cap
    if isinstance(timeout, tuple):
        return tuple(cap if t is None else min(float(t), cap) for t in timeout)
    return min(float(timeout), cap)


def _refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # urllib3 wraps the socket error several times
        if isinstance(current, ConnectionRefusedError):
            return True
        seen.add(id(current))
        nxt = current.__cause__ or current.__context__
        if nxt is None and current.args and isinstance(current.args[0], BaseException):
            nxt = current.args[0]
        current = nxt
    return "Connection refused" in str(exc)
