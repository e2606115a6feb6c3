"""`make demo`: the example orders app under gunicorn on local emulators, with a report.

1. ``cloudclients-emulator --storage-port 0 --topology …`` starts the Pub/Sub
   emulator and gcp-storage-emulator in one command, with the "orders" topic,
   a pull subscription for auditing, a push subscription delivering to the
   app's ``/pubsub/orders`` endpoint and the "receipts" bucket.
2. gunicorn serves ``examples/orders_app.py`` (``--preload``, 2 workers x 4 threads).
3. A few dozen orders are placed from 8 threads, with a progress line.
4. The report shows which workers served, how many clients each built (one per
   kind), what was published, pushed back and stored, and what the workers
   flushed when gunicorn stopped them gracefully.

Everything it starts runs in its own process group and is stopped on exit,
Ctrl-C included.
"""

from __future__ import annotations

import json
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
from typing import IO, Any

from cloudclients import ClientRegistry, Settings
from cloudclients.testing import free_port, pull_messages, stop_process_group

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "demo-project"
ORDERS = 40


def http(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
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


def start_emulators(app_port: int, topology_file: IO[str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Run the project's emulator command; return it and the variables it printed."""
    topology = {
        "topics": [
            {
                "name": "orders",
                "subscriptions": [
                    {"name": "orders-audit", "ackDeadlineSeconds": 30},
                    {
                        "name": "orders-push",
                        "ackDeadlineSeconds": 30,
                        "pushConfig": {"pushEndpoint": f"http://127.0.0.1:{app_port}/pubsub/orders"},
                    },
                ],
            }
        ],
        "buckets": ["receipts"],
    }
    json.dump(topology, topology_file)
    topology_file.flush()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloudclients_emulator",
            "--host-port",
            "127.0.0.1:0",
            "--storage-port",
            "0",
            "--project",
            PROJECT,
            "--topology",
            topology_file.name,
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    env: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:  # "export NAME=value" lines; PUBSUB_EMULATOR_HOST comes last, when ready
        match = re.match(r"export (\w+)=(\S+)", line)
        if match:
            env[match.group(1)] = match.group(2)
        if "PUBSUB_EMULATOR_HOST" in env:
            break
    if "PUBSUB_EMULATOR_HOST" not in env:
        raise RuntimeError(f"cloudclients-emulator exited with {proc.wait()} before it was ready")
    return proc, env


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL what is left after *timeout*."""
    if proc is not None:
        stop_process_group(proc, timeout)


def main() -> int:
    started = time.monotonic()
    emulator: subprocess.Popen[str] | None = None
    gunicorn: subprocess.Popen[bytes] | None = None
    admin: ClientRegistry | None = None
    log = tempfile.NamedTemporaryFile(prefix="demo-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    topology = tempfile.NamedTemporaryFile("w", prefix="demo-topology-", suffix=".json", delete=False)  # noqa: SIM115
    try:
        port = free_port()
        print("Starting cloudclients-emulator (Pub/Sub + Storage) on 127.0.0.1 …", flush=True)
        emulator, emulator_env = start_emulators(port, topology)
        env = {**os.environ, **emulator_env, "GOOGLE_CLOUD_PROJECT": PROJECT, "PYTHONPATH": str(ROOT)}
        print(
            f"  PUBSUB_EMULATOR_HOST={emulator_env['PUBSUB_EMULATOR_HOST']}  "
            f"STORAGE_EMULATOR_HOST={emulator_env['STORAGE_EMULATOR_HOST']}"
        )
        admin = ClientRegistry.from_settings(Settings.from_mapping({}, env), name="demo-admin")

        gunicorn = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "examples/gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{port}",
                "examples.orders_app:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", gunicorn)
        print(f"gunicorn --preload, 2 workers x 4 threads, master pid {gunicorn.pid}, at {base}")

        replies: list[dict[str, Any]] = []
        with ThreadPoolExecutor(8) as pool:
            orders = pool.map(lambda i: http(base + "/orders", {"item": f"item-{i}", "qty": 1 + i % 3}), range(ORDERS))
            for reply in orders:
                replies.append(reply)
                end = "" if sys.stdout.isatty() else "\n"
                if sys.stdout.isatty() or len(replies) % 10 == 0:
                    print(f"\r  orders placed: {len(replies):3d}/{ORDERS}", end=end, flush=True)
        if sys.stdout.isatty():
            print()

        receipts: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # push deliveries land a moment after the orders
            receipts = http(base + "/receipts")["receipts"]
            processed = sum(r["processed"] for r in receipts)
            print(f"\r  pushed back and processed: {processed:3d}/{ORDERS}", end="", flush=True)
            if processed >= ORDERS:
                break
            time.sleep(0.2)
        print()
        per_worker: dict[int, dict[str, Any]] = {}
        served = {r["pid"] for r in replies}
        for _ in range(50):  # sample /stats until every worker that served has answered
            stats = http(base + "/stats")
            per_worker[stats["pid"]] = stats
            if served <= set(per_worker):
                break

        stop(gunicorn, 60)  # graceful: each worker flushes its publisher in worker_exit
        audit = pull_messages(admin, f"projects/{PROJECT}/subscriptions/orders-audit", expected=ORDERS, timeout=20)
        gunicorn_log = Path(log.name).read_text(errors="replace")
        flushed = [int(n) for n in re.findall(r"publisher flushed (\d+) message", gunicorn_log)]
        master = re.search(r"master registry stats: (\{.*\})", gunicorn_log)

        print("\nReport")
        counts: dict[int, int] = {}
        for r in replies:
            counts[r["pid"]] = counts.get(r["pid"], 0) + 1
        listing = ", ".join(f"pid {p}: {n} orders" for p, n in sorted(counts.items()))
        print(f"  workers that served     : {len(counts)}  ({listing})")
        for pid, stats in sorted(per_worker.items()):
            built = ", ".join(f"{k}={v['constructions']}" for k, v in stats["clients"].items())
            print(f"  clients built in pid {pid:<3}: {built}")
        if master:
            built = ", ".join(f"{k}={v['constructions']}" for k, v in json.loads(master.group(1))["clients"].items())
            print(f"  clients built in master : {built} (pid {gunicorn.pid}: init_app builds nothing)")
        print(f"  orders published        : {len(replies)} (each confirmed before its 201)")
        print(f"  received by pull        : {len(audit)} on orders-audit")
        print(f"  received by push        : {sum(r['processed'] for r in receipts)} processed by /pubsub/orders")
        print(f"  receipts stored         : {len(receipts)} in gs://receipts")
        queued = sum(flushed)
        why = " (every order was confirmed before its 201)" if queued == 0 else ""
        print(
            f"  graceful shutdown       : {len(flushed)} worker(s) flushed and closed their clients; "
            f"{queued} message(s) were still queued{why}"
        )
        print(f"  total time              : {time.monotonic() - started:.1f} s")
        ok = len(audit) == len(replies) == len(receipts) == ORDERS and all(r["processed"] for r in receipts)
        print("  result                  : " + ("OK, nothing lost" if ok else "MISMATCH"))
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything …")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        if admin is not None:
            admin.close(timeout=5)
        stop(gunicorn)
        stop(emulator)
        for f in (log, topology):
            f.close()
            os.unlink(f.name)


if __name__ == "__main__":
    sys.exit(main())
