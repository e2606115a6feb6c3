"""Status codes and the one exception type for every refusal.

The codes are gRPC's (``google.rpc.Code``), defined here so the emulator needs
no grpcio at run time: it speaks gRPC itself (``grpc_h2.py``).
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["ApiError", "Code", "http_status"]


class Code(enum.IntEnum):
    """gRPC status codes, by name and number."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_HTTP = {
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.OUT_OF_RANGE: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.CANCELLED: 499,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}


class ApiError(Exception):
    """Refuse a call with *code* and *message* (gRPC status, or its HTTP mapping for REST).

    *details* are protobuf messages (``google.rpc.ErrorInfo`` …) sent with the
    status in gRPC's ``grpc-status-details-bin`` trailer, where clients look
    for machine-readable reasons (exactly-once delivery's per-ack-id results).
    """

    def __init__(self, code: Code, message: str, details: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def http_status(code: Code) -> int:
    """The HTTP status Google's REST APIs use for a gRPC status code."""
    return 200 if code is Code.OK else _HTTP.get(code, 500)
