"""Fork storm: fork 100 children while 8 threads keep publishing in the parent.

    python fork_storm.py TOPIC FORKS THREADS

Run as a script (by tests/test_fork_storm.py) so that GRPC_ENABLE_FORK_SUPPORT
is fixed before grpc is imported. Each child publishes one message with its own
(rebuilt) publisher and exits; a child that has not finished within
CHILD_TIMEOUT seconds counts as hung and is killed. Prints one JSON report.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import warnings

# Forking while gRPC threads run is exactly what this script tests.
warnings.simplefilter("ignore", DeprecationWarning)

from cloudclients import ClientRegistry, Settings  # noqa: E402

CHILD_TIMEOUT = float(os.environ.get("STORM_CHILD_TIMEOUT", "10"))
CONCURRENT_CHILDREN = 4


def child(registry: ClientRegistry, topic: str, n: int, out_fd: int) -> None:
    started = time.monotonic()
    try:
        registry.publisher.publish(topic, f"child-{n}".encode(), side="child").result(timeout=CHILD_TIMEOUT - 2)
        report = {"ok": True, "seconds": time.monotonic() - started,
                  "transport": type(registry.publisher.transport).__name__}
    except BaseException as exc:
        report = {"ok": False, "error": repr(exc)}
    os.write(out_fd, json.dumps(report).encode())
    os._exit(0)  # no interpreter teardown in a fork child: nothing here is ours to finalise


def storm(registry: ClientRegistry, topic: str, forks: int) -> list[dict[str, object]]:
    """Fork *forks* children, CONCURRENT_CHILDREN at a time; return their reports."""
    results: list[dict[str, object]] = []
    running: dict[int, tuple[int, float]] = {}  # pid -> (read fd, started)
    n = 0
    while n < forks or running:
        while n < forks and len(running) < CONCURRENT_CHILDREN:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                child(registry, topic, n, write_fd)
            os.close(write_fd)
            running[pid] = (read_fd, time.monotonic())
            n += 1
        for pid, (read_fd, started) in list(running.items()):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == 0 and time.monotonic() - started > CHILD_TIMEOUT:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                results.append({"ok": False, "error": "hung", "pid": pid})
            elif done == 0:
                continue
            else:
                data = os.read(read_fd, 65536)
                results.append(json.loads(data) if data else {"ok": False, "error": "no report"})
            os.close(read_fd)
            del running[pid]
        time.sleep(0.005)
    return results


def main() -> int:
    topic, forks, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    registry = ClientRegistry.from_settings(Settings.from_mapping({}), name="storm")
    stop = threading.Event()
    counts = [0] * threads
    errors: list[str] = []

    def publish_forever(i: int) -> None:
        while not stop.is_set():
            try:
                registry.publisher.publish(topic, b"parent", side="parent").result(timeout=CHILD_TIMEOUT)
                counts[i] += 1
            except Exception as exc:
                errors.append(repr(exc))

    workers = [threading.Thread(target=publish_forever, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    warm_up = time.monotonic() + 30
    while min(counts) == 0:
        if time.monotonic() > warm_up:
            print(json.dumps({"error": "parent threads never published", "parent_errors": errors[:5]}))
            return 1
        time.sleep(0.01)

    before = sum(counts)
    storm_started = time.monotonic()
    results = storm(registry, topic, forks)
    storm_seconds = time.monotonic() - storm_started
    during = sum(counts) - before
    time.sleep(1.0)
    after = sum(counts) - before - during
    stop.set()
    for w in workers:
        w.join(CHILD_TIMEOUT + 1)
    report = {
        "children": len(results),
        "children_ok": sum(1 for r in results if r["ok"]),
        "hung": sum(1 for r in results if r.get("error") == "hung"),
        "failures": [r for r in results if not r["ok"]][:5],
        "max_child_seconds": max((float(r["seconds"]) for r in results if r["ok"]), default=None),  # type: ignore[arg-type]
        "transports": sorted({str(r["transport"]) for r in results if r["ok"]}),
        "parent_published_during_storm": during,
        "parent_published_after_storm": after,
        "parent_errors": errors[:5],
        "storm_seconds": round(storm_seconds, 2),
    }
    print(json.dumps(report), flush=True)
    registry.close(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
