"""Fault injection: the next N calls of a method fail with a status, or are delayed."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .errors import Code

__all__ = ["MAX_DELAY_MS", "Fault", "Faults"]

MAX_COUNT = 1_000_000_000
MAX_DELAY_MS = 600_000  # ten minutes
_FIELDS = ("method", "count", "status", "delay_ms")


@dataclass
class Fault:
    """``count`` calls of ``method`` (-1: until cleared) fail with ``status`` after ``delay_ms``."""

    method: str
    count: int
    status: Code
    delay_ms: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"method": self.method, "count": self.count, "status": self.status.name, "delay_ms": self.delay_ms}


def _whole(spec: dict[str, Any], key: str, default: int, *, low: int, high: int, what: str) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key!r} must be {what}, not {value!r}")
    return value


class Faults:
    """The armed faults, checked at the start of every call (gRPC and REST)."""

    def __init__(self, methods: Collection[str]) -> None:
        self.methods = frozenset(methods)
        self._faults: list[Fault] = []

    def add(self, spec: Any) -> Fault:
        """Arm a fault from the admin API's JSON body.

        :raises ValueError: naming the field, the bad value and what is expected.
        """
        if not isinstance(spec, dict):
            raise ValueError('the body must be a JSON object, e.g. {"method": "Publish", "count": 1, '
                             '"status": "UNAVAILABLE"}')
        unknown = sorted(set(spec) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}; a fault has {', '.join(_FIELDS)}")
        raw = spec.get("method")
        if not isinstance(raw, str) or not raw:
            raise ValueError("'method' is required: an RPC name such as \"Publish\" or \"StreamingPull\"")
        method = raw.rsplit("/", 1)[-1]
        if method not in self.methods:
            close = [m for m in self.methods if m.lower() == method.lower()]
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(self.methods))}"
            raise ValueError(f"'method' {raw!r} is not an RPC of the emulator{hint}")
        status_name = spec.get("status", "OK")
        if not isinstance(status_name, str) or status_name.upper() not in Code.__members__:
            raise ValueError(f"'status' {status_name!r} is not a gRPC status code name (e.g. \"UNAVAILABLE\")")
        count = _whole(spec, "count", 1, low=-1, high=MAX_COUNT,
                       what=f"a whole number from 1 to {MAX_COUNT:,}, or -1 (until cleared)")
        if count == 0:
            raise ValueError("'count' must be a whole number from 1 up, or -1 (until cleared), not 0")
        delay = _whole(spec, "delay_ms", 0, low=0, high=MAX_DELAY_MS,
                       what=f"a whole number of milliseconds from 0 to {MAX_DELAY_MS:,}")
        fault = Fault(method, count, Code[status_name.upper()], delay)
        self._faults.append(fault)
        return fault

    @property
    def armed(self) -> bool:
        """True while any fault is armed (the fast path of every call checks this first)."""
        return bool(self._faults)

    def clear(self) -> None:
        self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        return [f.as_json() for f in self._faults]

    def take(self, method: str) -> Fault | None:
        """The first armed fault for *method* (used up by this call), or None."""
        if not self._faults:
            return None
        fault = next((f for f in self._faults if f.method == method), None)
        if fault is not None and fault.count > 0:
            fault.count -= 1
            if fault.count == 0:
                self._faults.remove(fault)
        return fault
