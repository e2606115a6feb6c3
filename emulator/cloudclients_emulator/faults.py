"""Fault injection: the next N calls of a method fail with a status, or are delayed."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from .errors import ApiError

__all__ = ["Fault", "Faults"]


@dataclass
class Fault:
    """``count`` calls of ``method`` (-1: until cleared) fail with ``status`` after ``delay_ms``."""

    method: str
    count: int
    status: grpc.StatusCode
    delay_ms: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"method": self.method, "count": self.count, "status": self.status.name, "delay_ms": self.delay_ms}


class Faults:
    """The armed faults, checked at the start of every call (gRPC and REST)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, spec: dict[str, Any]) -> Fault:
        """Arm a fault from the admin API's JSON body; raises ValueError on bad input."""
        method = str(spec.get("method", "")).rsplit("/", 1)[-1]
        if not method:
            raise ValueError("'method' is required, e.g. \"Publish\" or \"StreamingPull\"")
        status_name = str(spec.get("status", "OK")).upper()
        try:
            status = grpc.StatusCode[status_name]
        except KeyError:
            raise ValueError(f"'status' {status_name!r} is not a gRPC status code name") from None
        count, delay = int(spec.get("count", 1)), int(spec.get("delay_ms", 0))
        if count == 0 or count < -1 or delay < 0:
            raise ValueError("'count' must be positive or -1 (until cleared); 'delay_ms' must be >= 0")
        fault = Fault(method, count, status, delay)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.as_json() for f in self._faults]

    def check(self, method: str) -> None:
        """Apply the first armed fault for *method*, if any."""
        if not self._faults:  # fast path, no lock
            return
        with self._lock:
            fault = next((f for f in self._faults if f.method == method), None)
            if fault is None:
                return
            if fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
        if fault.delay_ms:
            time.sleep(fault.delay_ms / 1000)
        if fault.status is not grpc.StatusCode.OK:
            raise ApiError(fault.status, f"Injected fault for {method}")
