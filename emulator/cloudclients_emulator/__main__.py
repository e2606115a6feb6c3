"""``cloudclients-emulator`` / ``python -m cloudclients_emulator``: run the emulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["main"]

#: SIGTERM to exit, whatever is in flight (a watchdog enforces it).
SHUTDOWN_LIMIT = 1.8


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


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds from 0.1 to 3600")
    return seconds


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
                   help="messages a subscription or snapshot may hold before Publish is refused (default 1,000,000)")
    p.add_argument("--max-bytes-per-subscription", type=_positive, default=1 << 30,
                   help="bytes a subscription or snapshot may hold before Publish is refused (default 1 GiB)")
    p.add_argument("--http-timeout", type=_seconds, default=10.0,
                   help="seconds an HTTP/1.1 request may take to arrive in full (default 10)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("hpack", "h2", "asyncio"):  # frame-by-frame at DEBUG
        logging.getLogger(chatty).setLevel(max(logging.INFO, logging.getLogger().level))
    from .server import Emulator  # imported late: --help stays instant
    from .state import Caps

    host, port = args.host_port
    try:
        emulator = Emulator(host, port, project=args.project, request_timeout=args.http_timeout,
                            caps=Caps(messages=args.max_messages_per_subscription,
                                      bytes=args.max_bytes_per_subscription))
    except OSError as exc:
        print(f"cloudclients-emulator: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(emulator, args))


async def _serve(emulator: Emulator, args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await emulator.start(storage_port=args.storage_port, topology=args.topology)
    except Exception as exc:
        print(f"cloudclients-emulator: {exc}", file=sys.stderr)
        await emulator.stop()
        return 2
    if emulator.storage_host:
        print(f"export STORAGE_EMULATOR_HOST={emulator.storage_host}", flush=True)
    print(f"export PUBSUB_EMULATOR_HOST={emulator.host}", flush=True)
    await stop.wait()
    _watchdog(emulator)
    await emulator.stop()
    return 0


def _watchdog(emulator: Emulator) -> None:
    """Exit after :data:`SHUTDOWN_LIMIT` seconds even if stopping hangs (a stuck thread, a slow child)."""

    def force() -> None:
        emulator.stop_storage(0.0)
        logging.getLogger("cloudclients_emulator").warning("stopping took over %.1f s: exiting now", SHUTDOWN_LIMIT)
        os._exit(0)

    timer = threading.Timer(SHUTDOWN_LIMIT, force)
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    sys.exit(main())
