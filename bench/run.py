"""`make bench`: side-by-side benchmarks, printed as a table and written to bench/results.md.

Currently measured (more arrive with the benchmark issue):

1. cost per access inside a request: ``get_publisher()`` vs the common
   per-request pattern (``if "conn" not in g: g.conn = ...; return g.conn``)
   vs a plain dict read (the floor). The target is ≤ 0.5x the ``g`` pattern.

Everything runs in one process, in one run, so the ratios compare like with like.
No network: the clients are built against an unreachable emulator address and
never send anything.
"""

from __future__ import annotations

import os
import platform
import sys
import timeit
from importlib.metadata import version
from pathlib import Path
from typing import Any

from flask import Flask, g

from cloudclients import CloudClients, get_publisher

RESULTS = Path(__file__).with_name("results.md")
N = 200_000
REPEAT = 7


def per_access() -> list[tuple[str, float]]:
    app = Flask("bench")
    app.config.update(
        CLOUDCLIENTS_PROJECT="bench-project",
        CLOUDCLIENTS_PUBSUB_EMULATOR_HOST="127.0.0.1:9",
        CLOUDCLIENTS_STORAGE_EMULATOR_HOST="http://127.0.0.1:9",
    )
    CloudClients(app)
    plain: dict[str, Any] = {"conn": object()}
    conn = object()

    def g_pattern() -> object:
        if "conn" not in g:
            g.conn = conn
        return g.conn

    def dict_read() -> object:
        return plain["conn"]

    rows = []
    with app.test_request_context("/"):
        get_publisher()  # build once: we measure access, not construction
        g_pattern()
        for label, fn in (
            ("cloudclients get_publisher()", get_publisher),
            ('per-request g pattern ("conn" in g / g.conn)', g_pattern),
            ("plain dict read (floor)", dict_read),
        ):
            best = min(timeit.repeat(fn, number=N, repeat=REPEAT)) / N
            rows.append((label, best * 1e9))
    CloudClients.get_registry(app).close(timeout=1)
    return rows


def main() -> int:
    rows = per_access()
    baseline = rows[1][1]
    header = (
        f"Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}; "
        f"Flask {version('flask')}, google-cloud-pubsub {version('google-cloud-pubsub')}, "
        f"cloudclients {version('cloudclients')}"
    )
    lines = [
        "# Benchmark results",
        "",
        header,
        "",
        f"## 1. Cost per access inside a request (best of {REPEAT} x {N:,} calls)",
        "",
        "| access | ns/call | ratio to g pattern |",
        "|---|---:|---:|",
        *(f"| {label} | {ns:.0f} | {ns / baseline:.2f}x |" for label, ns in rows),
        "",
        f"Target: get_publisher() <= 0.5x the g pattern -> "
        f"{'met' if rows[0][1] <= 0.5 * baseline else 'MISSED'} ({rows[0][1] / baseline:.2f}x).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.write_text(text)
    print(f"written to {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
