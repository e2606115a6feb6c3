"""Queue publishes that are not sent yet, then leave: the exit handlers must flush them.

    python exit_publish.py MODE TOPIC COUNT

MODE: ``atexit`` (return normally), ``sigterm`` (wait for SIGTERM from the test),
``sigterm-chained`` (the app has its own SIGTERM handler, installed first).
The batch latency is 30 s, so nothing is sent before the process ends unless
cloudclients flushes it. Settings come from the environment.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

from flask import Flask

from cloudclients import CloudClients, get_publisher


def app_handler(signum: int, frame: FrameType | None) -> None:
    print("app handler ran", flush=True)
    os._exit(3)


def main() -> int:
    mode, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "sigterm-chained":
        signal.signal(signal.SIGTERM, app_handler)
    app = Flask("exit-app")
    app.config.update(CLOUDCLIENTS_BATCH_MAX_LATENCY=30, CLOUDCLIENTS_BATCH_MAX_MESSAGES=1000)
    if os.environ.get("TEST_NO_EXIT_HANDLERS"):
        app.config["CLOUDCLIENTS_EXIT_HANDLERS"] = False
    CloudClients(app)
    with app.app_context():
        for i in range(count):
            get_publisher().publish(topic, f"m{i}".encode())
    print("queued", flush=True)
    if mode.startswith("sigterm"):
        time.sleep(60)
        return 1  # not reached: SIGTERM ends the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
