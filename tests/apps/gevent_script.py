"""Publish from 20 greenlets in a gevent-patched process (run by tests/test_gevent.py).

argv: TOPIC. Emulator hosts and project come from the environment. Prints one JSON line:
whether gRPC was switched to gevent mode and the confirmed message IDs.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 - after patching, as gevent requires
import logging  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

from cloudclients import (  # noqa: E402
    ClientRegistry,
    Settings,
    gevent_status,
)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    topic = sys.argv[1]
    registry = ClientRegistry.from_settings(Settings.from_mapping({}), name="gevent-script")
    enabled_before = gevent_status()["grpc_gevent"]

    def publish(i: int) -> str:
        return str(registry.publisher.publish(topic, f"g{i}".encode()).result(timeout=20))

    jobs = [gevent.spawn(publish, i) for i in range(20)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    registry.close(timeout=10)
    print(json.dumps({"before": enabled_before, "enabled": gevent_status()["grpc_gevent"],
                      "ids": [j.value for j in jobs]}))


if __name__ == "__main__":
    main()
