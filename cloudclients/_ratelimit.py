"""Log lines that cannot flood: at most one per key per interval, then a count of the rest."""

from __future__ import annotations

import logging
import threading
import time

from ._fork import ProcessBound

__all__ = ["RateLimitedLog"]


class RateLimitedLog(ProcessBound):
    """Emits the first record for a key, then at most one per *interval* seconds,
    each saying how many were suppressed since the last one.

    For failures that come in bursts (every publish to a missing topic, every
    request during an outage): the log says what and how often, without a line
    per event.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        super().__init__()  # last: the fork hooks may see this object from here on

    def error(self, key: str, message: str, *args: object) -> None:
        """Log *message* at ERROR for *key*, unless one was logged less than *interval* ago."""
        self._checkpid()
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" ({suppressed} more like it since the last report)"
        self._logger.error(message, *args)

    def _fork_locks(self) -> list[threading.Lock]:
        return [self._lock]

    def _forget_parent(self, parent_pid: int, hooks_ran: bool) -> None:
        self._lock = threading.Lock()  # the counts are plain data: kept
