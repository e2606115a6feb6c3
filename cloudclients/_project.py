"""The project a registry's clients use: configured, or discovered once where it is needed.

``CLOUDCLIENTS_PROJECT`` (or ``GOOGLE_CLOUD_PROJECT``) is optional: Cloud Run and
GCE do not set a project variable, and the client libraries find the project
in the credentials or the metadata server. Discovery may touch the network, so
it never runs in ``init_app`` (a gunicorn ``--preload`` master): it runs the
first time something in a worker needs a project — a short topic name, the
Storage client, a health ping — and its answer is kept (plain data, valid in
forked children too). A failed discovery is not repeated on every use: the
next attempt waits 2 s, then 4, 8 … up to 60 s (a negative cache with backoff),
so a process off GCP does not ask the metadata server on every request, and
one on GCP whose metadata server hiccuped still finds the project later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ._config import ConfigError
from ._fork import ProcessBound

__all__ = ["ProjectSource"]

#: ``discover()``: the project from the credentials / metadata server, or ``None``.
Discover = Callable[[], "str | None"]


class ProjectSource(ProcessBound):
    """The configured project, or the one *discover* finds on first use.

    :param configured: the project from the settings, if any.
    :param discover: called at most once (successfully) per process lineage.
    :param unset_fix: what to tell the user when there is no project anywhere.
    :param retry_after: seconds before a failed discovery is tried again; doubled
        per failure up to *max_retry_after*.
    """

    def __init__(
        self,
        configured: str | None,
        discover: Discover,
        unset_fix: str,
        *,
        retry_after: float = 2.0,
        max_retry_after: float = 60.0,
    ) -> None:
        self._value = configured
        self._discover = discover
        self._unset_fix = unset_fix
        self._lock = threading.Lock()
        # The negative cache: after a failed discovery, none is attempted before _retry_at
        # (the metadata server is not asked on every request); the wait doubles per failure.
        self._first_wait = retry_after
        self._max_wait = max_retry_after
        self._wait = 0.0
        self._retry_at: float | None = None
        super().__init__()  # last: the fork hooks may see this object from here on

    @property
    def known(self) -> str | None:
        """The project if configured or already discovered; never discovers."""
        return self._value

    def get(self) -> str:
        """The project, discovering it on first use.

        :raises ConfigError: if it is not configured and cannot be discovered.
        """
        value = self._value
        if value is not None:
            return value
        self._checkpid()
        with self._lock:
            if self._value is not None:
                return self._value
            now = time.monotonic()
            if self._retry_at is not None and now < self._retry_at:
                raise self._error(f" (not asked again for {self._retry_at - now:.0f} s after the last failure)")
            found = self._discover()
            if not found:
                self._wait = min(self._max_wait, self._wait * 2 if self._wait else self._first_wait)
                self._retry_at = time.monotonic() + self._wait
                raise self._error(f" (asked again in {self._wait:.0f} s at the earliest)")
            self._value = found
            return found

    def _error(self, when: str) -> ConfigError:
        return ConfigError(
            "No Google Cloud project: CLOUDCLIENTS_PROJECT and GOOGLE_CLOUD_PROJECT are not set and none could be "
            f"discovered{when}. Fix: {self._unset_fix}"
        )

    def _fork_locks(self) -> list[threading.Lock]:
        return [self._lock]

    def _forget_parent(self, parent_pid: int, hooks_ran: bool) -> None:
        self._lock = threading.Lock()  # a discovered value is plain data: kept
