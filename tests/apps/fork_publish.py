"""Fork a process that holds a live publisher, publish from both sides.

Run as a script (by tests/test_fork.py) so that GRPC_ENABLE_FORK_SUPPORT is
fixed before grpc is imported:

    python fork_publish.py METHOD TOPIC

METHOD is ``os`` (os.fork), ``mp`` (multiprocessing's fork context) or
``ctypes`` (libc fork(): Python's at-fork hooks do not run). Settings come from
the environment (GOOGLE_CLOUD_PROJECT, PUBSUB_EMULATOR_HOST). Prints one JSON
line with what each side saw; exits non-zero on any failure.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import sys
import time
import warnings

# Forking a process with live gRPC threads is exactly what this script tests.
warnings.simplefilter("ignore", DeprecationWarning)

from cloudclients import ClientRegistry, Settings  # noqa: E402

CHILD_TIMEOUT = 10.0


def child_work(registry: ClientRegistry, topic: str, parent_publisher_id: int, out_fd: int) -> None:
    started = time.monotonic()
    report: dict[str, object] = {"pid": os.getpid()}
    try:
        report["before"] = registry.stats()
        publisher = registry.publisher
        report["new_client"] = id(publisher) != parent_publisher_id
        report["transport"] = type(publisher.transport).__name__
        report["message_id"] = publisher.publish(topic, b"child", side="child").result(timeout=CHILD_TIMEOUT)
        report["after"] = registry.stats()
        report["seconds"] = round(time.monotonic() - started, 3)
        report["ok"] = True
    except BaseException as exc:
        report["error"] = repr(exc)
        report["ok"] = False
    os.write(out_fd, json.dumps(report).encode() + b"\n")


def main() -> int:
    method, topic = sys.argv[1], sys.argv[2]
    registry = ClientRegistry.from_settings(Settings.from_mapping({}), name="forktest")
    publisher = registry.publisher
    result: dict[str, object] = {"method": method, "parent_pid": os.getpid()}
    result["parent_before"] = publisher.publish(topic, b"parent-before", side="parent").result(timeout=10)

    read_fd, write_fd = os.pipe()
    if method == "mp":
        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(target=child_work, args=(registry, topic, id(publisher), write_fd))
        proc.start()
        proc.join(CHILD_TIMEOUT + 10)
        if proc.is_alive():
            proc.kill()
            result["child_hung"] = True
        child_status = proc.exitcode
    else:
        pid = ctypes.CDLL(None).fork() if method == "ctypes" else os.fork()
        if pid == 0:
            try:
                child_work(registry, topic, id(publisher), write_fd)
            finally:
                os._exit(0)
        deadline = time.monotonic() + CHILD_TIMEOUT + 10
        child_status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                child_status = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            result["child_hung"] = True
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        line = fh.readline()
    result["child"] = json.loads(line) if line else None
    result["child_status"] = child_status

    # The parent's own client must be untouched by the fork and keep working.
    result["parent_same_client"] = registry.publisher is publisher
    result["parent_after"] = publisher.publish(topic, b"parent-after", side="parent").result(timeout=10)
    result["parent_stats"] = registry.stats()
    registry.close(timeout=10)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
