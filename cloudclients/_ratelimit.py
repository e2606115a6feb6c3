"""Log lines that cannot flood: at most one per key per interval, then a count of the rest."""

from __future__ import annotations

import logging
import threading
import time

from ._fork import ProcessBound

__all__ = ["RateLimitedLog"]

#: Most keys remembered at once.
_MAX_KEYS = 1024


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
        self.log(logging.ERROR, key, message, *args)

    def warning(self, key: str, message: str, *args: object, exc_info: BaseException | bool = False) -> None:
        """Log *message* at WARNING for *key*, unless one was logged less than *interval* ago."""
        self.log(logging.WARNING, key, message, *args, exc_info=exc_info)

    def log(self, level: int, key: str, message: str, *args: object, exc_info: BaseException | bool = False) -> None:
        """Log *message* at *level* for *key*, unless one was logged less than *interval* ago."""
        self._checkpid()
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            if len(self._last) >= _MAX_KEYS:  # keys may come from requests: never grow without bound
                self._forget_quiet_keys(now)
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" ({suppressed} more like it since the last report)"
        self._logger.log(level, message, *args, exc_info=exc_info)

    def _forget_quiet_keys(self, now: float) -> None:
        for key in [k for k, last in self._last.items() if now - last >= self._interval]:
            del self._last[key]
            self._suppressed.pop(key, None)
        if len(self._last) >= _MAX_KEYS:  # all of them recent: start afresh
            self._last.clear()
            self._suppressed.clear()

    def _fork_locks(self) -> list[threading.Lock]:
        return [self._lock]

    def _forget_parent(self, parent_pid: int, hooks_ran: bool) -> None:
        self._lock = threading.Lock()  # the counts are plain data: kept
