"""A StreamingPull driven by hand (the generated transport, no subscriber machinery).

The test decides every request and sees every response, and can cancel or
half-close the stream, which ``subscribe()`` never lets it do.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from google.pubsub_v1.types import StreamingPullRequest

from tests.conformance_core.conftest import Target

_END = object()


class RawStream:
    """One StreamingPull: ``send()`` requests, read ``received`` ack ids, ``cancel()`` or ``half_close()``."""

    def __init__(self, target: Target, subscription: str | None, **first: Any) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        if subscription is None:  # no request at all: the stream only opens
            self._requests.put(_END)
        first.setdefault("stream_ack_deadline_seconds", 10)
        if subscription is not None:
            self._requests.put(StreamingPullRequest(subscription=subscription, **first))
        self.lock = threading.Lock()
        self.received: list[tuple[str, bytes]] = []  # (ack id, data)
        self.responses: list[Any] = []
        self.error: Any = None
        self.done = threading.Event()
        # The transport's gRPC stub: the call object it returns can be cancelled.
        self.call = target.subscriber.transport.streaming_pull(self._iterate(), timeout=120)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _iterate(self) -> Iterator[Any]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            yield item

    def _read(self) -> None:
        try:
            for response in self.call:
                with self.lock:
                    self.responses.append(response)
                    self.received += [(m.ack_id, m.message.data) for m in response.received_messages]
        except Exception as exc:  # the stream's end: its status
            self.error = exc
        finally:
            self.done.set()

    def send(self, **fields: Any) -> None:
        self._requests.put(StreamingPullRequest(**fields))

    def half_close(self) -> None:
        self._requests.put(_END)

    def cancel(self) -> None:
        self.call.cancel()
        self.done.wait(10)

    def code(self) -> Any:
        """The stream's final status code (after ``done``)."""
        return self.call.code()

    def ack_ids(self) -> list[str]:
        with self.lock:
            return [a for a, _ in self.received]
