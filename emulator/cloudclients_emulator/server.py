"""Assemble the emulator: state, gRPC server, the one public port, push, storage child."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import json_format

from .faults import Faults
from .front import Front
from .push import PushDelivery
from .rest import make_handler
from .service import Service, grpc_handlers
from .state import Caps, State, pb

__all__ = ["Emulator"]

log = logging.getLogger("cloudclients_emulator")

#: gRPC worker threads: one per unary call in progress and one per open
#: StreamingPull (a sync server holds a thread for each open stream).
GRPC_WORKERS = 512


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Linux: the storage emulator gets SIGTERM if we die, even by SIGKILL.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Emulator:
    """A running emulator (see ``__main__`` for the command line)."""

    def __init__(self, host: str, port: int, *, project: str, max_messages: int, max_bytes: int) -> None:
        self.project = project
        self.state = State(Caps(messages=max_messages, bytes=max_bytes))
        self.service = Service(self.state, Faults())
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS, thread_name_prefix="grpc"),
            handlers=grpc_handlers(self.service),
            options=[("grpc.max_receive_message_length", 20 * 1024 * 1024),
                     ("grpc.max_send_message_length", 20 * 1024 * 1024)],
        )
        grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._front = Front(host, port, grpc_port, make_handler(self.service))
        shown = f"[{host}]" if ":" in host else host
        self.host = f"{shown}:{self._front.port}"
        self._push = PushDelivery(self.state)
        self._storage: subprocess.Popen[bytes] | None = None
        self.storage_host: str | None = None

    def start(self, storage_port: int | None = None, topology: str | None = None) -> None:
        # The storage child is forked before gRPC starts its threads: a fork
        # while they run makes gRPC skip its fork handlers (and log about it).
        storage_url = self._spawn_storage(storage_port) if storage_port is not None else None
        self._grpc.start()
        threading.Thread(target=self._front.serve_forever, name="front", daemon=True).start()
        self._push.start()
        if storage_url is not None:
            self._wait_storage(storage_url)
        if topology:
            self._load_topology(topology)

    def stop(self) -> None:
        self._front.close()
        self._push.stop()
        self.state.break_streams(grpc.StatusCode.UNAVAILABLE)
        self._grpc.stop(grace=0.5).wait(2)
        if self._storage is not None and self._storage.poll() is None:
            self._storage.terminate()
            try:
                self._storage.wait(5)
            except subprocess.TimeoutExpired:
                self._storage.kill()

    # -- storage ------------------------------------------------------------------------

    def _spawn_storage(self, port: int) -> str:
        host = self.host.rsplit(":", 1)[0].strip("[]")
        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", host, "--port", str(port),
               "--in-memory"]
        self._storage = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509 - only prctl
        return f"http://{host}:{port}"

    def _wait_storage(self, url: str) -> None:
        import urllib.request  # deferred: 25 ms of start-up, only needed with --storage-port

        assert self._storage is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._storage.poll() is not None:
                raise RuntimeError(f"gcp-storage-emulator exited with {self._storage.returncode}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "/", timeout=1).read()
                self.storage_host = url
                return
            time.sleep(0.05)
        raise RuntimeError(f"gcp-storage-emulator did not answer on {url} within 20 s")

    # -- topology -----------------------------------------------------------------------

    def _full(self, name: str, collection: str) -> str:
        return name if name.startswith("projects/") else f"projects/{self.project}/{collection}/{name}"

    def _load_topology(self, path: str) -> None:
        """Create what *path* describes::

            {"topics": [{"name": "orders", "subscriptions": [{"name": "orders-worker", "ackDeadlineSeconds": 30}]}],
             "buckets": ["receipts"]}
        """
        with open(path, encoding="utf-8") as fh:
            spec: dict[str, Any] = json.load(fh)
        for topic in spec.get("topics", []):
            name = self._full(topic["name"], "topics")
            self.state.create_topic(pb.Topic(name=name, labels=topic.get("labels", {})))
            for sub in topic.get("subscriptions", []):
                body = {k: v for k, v in sub.items() if k != "name"}
                request = json_format.ParseDict(body, pb.Subscription())
                request.name = self._full(sub["name"], "subscriptions")
                request.topic = name
                dlq = request.dead_letter_policy.dead_letter_topic
                if dlq:
                    request.dead_letter_policy.dead_letter_topic = self._full(dlq, "topics")
                self.state.create_subscription(request)
        import urllib.request  # deferred, as above

        buckets = spec.get("buckets", [])
        if buckets and self.storage_host is None:
            raise RuntimeError(f"{path} lists buckets but no --storage-port was given")
        for bucket in buckets:
            data = json.dumps({"name": bucket}).encode()
            req = urllib.request.Request(f"{self.storage_host}/storage/v1/b?project={self.project}", data=data,
                                         method="POST", headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()
