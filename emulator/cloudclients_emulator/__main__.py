"""``cloudclients-emulator`` / ``python -m cloudclients_emulator``: run the emulator."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

__all__ = ["main"]


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (port 0 picks a free one)")
    return host.strip("[]"), int(port)


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number 0-65535 (0 picks a free one)")
    return int(value)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cloudclients-emulator", description=__doc__)
    p.add_argument("--host-port", type=_host_port, default=("127.0.0.1", 8085),
                   help="address to serve gRPC, REST and the admin API on (default 127.0.0.1:8085; port 0: any)")
    p.add_argument("--project", default="test-project",
                   help="project for short names in --topology (resources of any project are accepted)")
    p.add_argument("--storage-port", type=_port, default=None,
                   help="also start gcp-storage-emulator on this port (0: any) and print STORAGE_EMULATOR_HOST")
    p.add_argument("--topology", default=None, help="JSON file of topics, subscriptions and buckets to create")
    p.add_argument("--max-messages-per-subscription", type=_positive, default=1_000_000,
                   help="messages a subscription may hold before Publish is refused (default 1,000,000)")
    p.add_argument("--max-bytes-per-subscription", type=_positive, default=1 << 30,
                   help="bytes a subscription may hold before Publish is refused (default 1 GiB)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .server import Emulator  # imported late: --help stays instant

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host, port = args.host_port
    emulator = Emulator(
        host, port, project=args.project,
        max_messages=args.max_messages_per_subscription, max_bytes=args.max_bytes_per_subscription,
    )
    try:
        emulator.start(storage_port=args.storage_port, topology=args.topology)
    except Exception as exc:
        print(f"cloudclients-emulator: {exc}", file=sys.stderr)
        emulator.stop()
        return 2
    if emulator.storage_host:
        print(f"export STORAGE_EMULATOR_HOST={emulator.storage_host}", flush=True)
    print(f"export PUBSUB_EMULATOR_HOST={emulator.host}", flush=True)
    while not stop.wait(0.5):
        pass
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
