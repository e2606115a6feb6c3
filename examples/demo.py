"""`make demo`: the example app under gunicorn on local emulators, with a report.

Starts a Pub/Sub emulator and gcp-storage-emulator (both on 127.0.0.1), the
example orders app under gunicorn (--preload, 2 workers x 4 threads), sends a
few dozen orders, then shows which workers served, how many clients each
built, what reached Pub/Sub and Storage, and what was flushed at shutdown.
Everything it starts is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cloudclients import ClientRegistry, Settings
from cloudclients._emulators import EmulatorProcess, free_port, start_pubsub_emulator, start_storage_emulator
from cloudclients.testing import pull_messages

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "demo-project"
ORDERS = 40


def request(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited early")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout} s")


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    emulators: list[EmulatorProcess] = []
    gunicorn: subprocess.Popen[bytes] | None = None
    log = tempfile.NamedTemporaryFile(prefix="demo-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    try:
        print("Starting the Pub/Sub and Storage emulators on 127.0.0.1 …", flush=True)
        pubsub = start_pubsub_emulator(project=PROJECT)
        emulators.append(pubsub)
        storage = start_storage_emulator()
        emulators.append(storage)
        env = {**os.environ, **pubsub.env, **storage.env, "GOOGLE_CLOUD_PROJECT": PROJECT, "PYTHONPATH": str(ROOT)}
        print(f"  Pub/Sub ({pubsub.kind}) at {pubsub.host}, Storage at {storage.host}")

        admin = ClientRegistry.from_settings(
            Settings.from_mapping({}, {k: v for k, v in env.items() if isinstance(v, str)}), name="demo-admin"
        )
        topic = f"projects/{PROJECT}/topics/orders"
        subscription = f"projects/{PROJECT}/subscriptions/orders-audit"
        admin.publisher.create_topic(name=topic)
        admin.subscriber.create_subscription(request={"name": subscription, "topic": topic})
        admin.storage.create_bucket("receipts")

        port = free_port()
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "examples/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
             "examples.orders_app:app"],
            cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/stats", gunicorn)
        print(f"gunicorn --preload, 2 workers x 4 threads, master pid {gunicorn.pid}, at {base}")

        replies: list[dict[str, Any]] = []

        def order(i: int) -> dict[str, Any]:
            return request(base + "/orders", {"item": f"item-{i}", "qty": 1 + i % 3})

        with ThreadPoolExecutor(8) as pool:
            for reply in pool.map(order, range(ORDERS)):
                replies.append(reply)
                if sys.stdout.isatty():
                    print(f"\r  orders placed: {len(replies):3d}/{ORDERS}", end="", flush=True)
                elif len(replies) % 10 == 0:
                    print(f"  orders placed: {len(replies):3d}/{ORDERS}", flush=True)
        if sys.stdout.isatty():
            print()
        per_worker: dict[int, dict[str, Any]] = {}
        for _ in range(50):  # sample /stats until every worker that served has answered
            stats = request(base + "/stats")
            per_worker[stats["pid"]] = stats
            if {r["pid"] for r in replies} <= set(per_worker):
                break
        receipts = request(base + "/receipts")["receipts"]

        os.killpg(gunicorn.pid, signal.SIGTERM)
        gunicorn.wait(60)
        messages = pull_messages(admin, subscription, expected=ORDERS, timeout=20)
        admin.close()

        gunicorn_log = Path(log.name).read_text(errors="replace")
        flushed = [int(n) for n in re.findall(r"publisher flushed (\d+) message", gunicorn_log)]
        served: dict[int, int] = {}
        for r in replies:
            served[r["pid"]] = served.get(r["pid"], 0) + 1

        print("\nReport")
        counts = ", ".join(f"pid {p}: {n} orders" for p, n in sorted(served.items()))
        print(f"  workers that served     : {len(served)}  ({counts})")
        for pid, stats in sorted(per_worker.items()):
            built = ", ".join(f"{k}={v['constructions']}" for k, v in stats["clients"].items())
            print(f"  clients built in pid {pid:<3}: {built}")
        master = re.search(r"master registry stats: (\{.*\})", gunicorn_log)
        if master:
            built = ", ".join(f"{k}={v['constructions']}" for k, v in json.loads(master.group(1))["clients"].items())
            print(f"  clients built in master: {built} (pid {gunicorn.pid}; init_app builds nothing)")
        print(f"  orders published        : {len(replies)} (confirmed before each response)")
        print(f"  messages received       : {len(messages)} pulled from {subscription.rsplit('/', 1)[1]}")
        print(f"  receipts stored         : {len(receipts)} in gs://receipts")
        print(f"  graceful shutdown       : {len(flushed)} worker(s) closed, {sum(flushed)} queued message(s) flushed")
        print(f"  total time              : {time.monotonic() - started:.1f} s")
        ok = len(messages) == len(replies) == len(receipts) == ORDERS
        print("  result                  : " + ("OK — nothing lost" if ok else "MISMATCH"))
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything …")
        return 130
    finally:
        if gunicorn is not None and gunicorn.poll() is None:
            os.killpg(gunicorn.pid, signal.SIGTERM)
            try:
                gunicorn.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(gunicorn.pid, signal.SIGKILL)
        for proc in emulators:
            proc.stop()
        log.close()
        os.unlink(log.name)


if __name__ == "__main__":
    sys.exit(main())
