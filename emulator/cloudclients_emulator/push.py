"""Push delivery: POST the service's JSON envelope to each push endpoint.

A 2xx (102, 200, 201, 202, 204 for the service) acknowledges; anything else, or
no answer within the ack deadline, counts as a nack and the message is retried
with backoff: the subscription's retry policy, or exponential from 100 ms to
10 s, as the service does for push.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .state import State, Sub

__all__ = ["PushDelivery", "envelope"]

log = logging.getLogger("cloudclients_emulator")


def envelope(sub_name: str, received: Any, with_attempt: bool) -> dict[str, Any]:
    """The JSON body the service POSTs for one message."""
    msg = received.message
    publish_time = msg.publish_time.ToJsonString()
    message: dict[str, Any] = {
        "data": base64.b64encode(msg.data).decode(),
        "attributes": dict(msg.attributes),
        "messageId": msg.message_id,
        "message_id": msg.message_id,
        "publishTime": publish_time,
        "publish_time": publish_time,
    }
    if msg.ordering_key:
        message["orderingKey"] = msg.ordering_key
    body: dict[str, Any] = {"message": message, "subscription": sub_name}
    if with_attempt:
        body["deliveryAttempt"] = received.delivery_attempt
    return body


class PushDelivery:
    """A background thread leasing messages of push subscriptions and POSTing them."""

    def __init__(self, state: State, workers: int = 16) -> None:
        self.state = state
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="push")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="push-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            work = self.state.push_work(time.monotonic())
            for sub, received in work:
                self._pool.submit(self._deliver, sub, received)
            if not work:
                with self.state.cond:
                    self.state.cond.wait(0.05)

    def _deliver(self, sub: Sub, received: Any) -> None:
        # urllib.request (with http.client) costs 25 ms at start-up; most runs never push.
        import urllib.error
        import urllib.request

        endpoint = sub.pb.push_config.push_endpoint
        body = json.dumps(envelope(sub.name, received, received.delivery_attempt > 0)).encode()
        request = urllib.request.Request(
            endpoint, data=body, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "APIs-Google; cloudclients-emulator"},
        )
        ok = False
        try:
            with urllib.request.urlopen(request, timeout=sub.pb.ack_deadline_seconds) as response:
                ok = response.status in (102, 200, 201, 202, 204)
        except urllib.error.HTTPError as exc:
            log.debug("push to %s: HTTP %d", endpoint, exc.code)
        except OSError as exc:
            log.debug("push to %s failed: %s", endpoint, exc)
        if ok:
            self.state.acknowledge(sub.name, [received.ack_id])
        else:
            self.state.push_failed(sub.name, received.ack_id)
