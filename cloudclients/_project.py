"""The project a registry's clients use: configured, or discovered once where it is needed.

``CLOUDCLIENTS_PROJECT`` (or ``GOOGLE_CLOUD_PROJECT``) is optional: Cloud Run and
GCE do not set a project variable, and the client libraries find the project
in the credentials or the metadata server. Discovery may touch the network, so
it never runs in ``init_app`` (a gunicorn ``--preload`` master): it runs the
first time something in a worker needs a project — a short topic name, the
Storage client, a health ping — and its answer is kept (plain data, valid in
forked children too).
"""

from __future__ import annotations

import threading
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
    """

    def __init__(self, configured: str | None, discover: Discover, unset_fix: str) -> None:
        self._value = configured
        self._discover = discover
        self._unset_fix = unset_fix
        self._lock = threading.Lock()
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
            if self._value is None:
                found = self._discover()
                if not found:
                    raise ConfigError(
                        "No Google Cloud project: CLOUDCLIENTS_PROJECT and GOOGLE_CLOUD_PROJECT are not set and "
                        f"none could be discovered. Fix: {self._unset_fix}"
                    )
                self._value = found
            return self._value

    def _fork_locks(self) -> list[threading.Lock]:
        return [self._lock]

    def _forget_parent(self, parent_pid: int, hooks_ran: bool) -> None:
        self._lock = threading.Lock()  # a discovered value is plain data: kept
