"""Only the realistic mix of bench/emulator_load.py, for working on the emulator's CPU per message.

Each round starts a fresh emulator per variant (ours, other versions of ours, the official one),
runs the chosen mixes on it in turn (``uncapped,capped`` is the order ``make bench`` uses: the
official emulator's JIT is warm for the capped one) and prints delivered/s and emulator CPU per
delivered message; then the medians and the ratios to the official emulator. Variants alternate
within each round: the machine's speed drifts, so compare them within one run::

    python -m bench.mix_cpu [--rounds 3] [--seconds 15] [--which uncapped,capped] [--official]
                            [--ours-path DIR ...] [--hold SECONDS]

``--ours-path`` (repeatable) runs "ours" from another copy of the emulator package (a directory
holding ``cloudclients_emulator``, put on ``PYTHONPATH``), e.g. a ``git archive`` of an older
commit, for before/after in one run; without it, the installed one. ``--hold`` waits after each
start (printing the emulator's pid) so a profiler can attach: ``py-spy record --pid PID``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from bench import emulator_load
from bench.bench_emulator import PROJECT, tree_cpu_s, tree_rss_mb
from cloudclients.testing import start_pubsub_emulator


def _ustime(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of *pid* itself (the main process: ours has no children)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--which", default="uncapped,capped")
    ap.add_argument("--official", action="store_true")
    ap.add_argument("--ours-path", action="append", default=[])
    ap.add_argument("--hold", type=float, default=0.0, help="sleep before the mix (to attach a profiler)")
    args = ap.parse_args()
    variants: list[tuple[str, str, dict[str, str]]] = []
    for path in args.ours_path or [""]:
        variants.append((f"ours{':' + path if path else ''}", "cloudclients", {"PYTHONPATH": path} if path else {}))
    if args.official:
        variants.append(("official", "official", {}))
    scenarios = {"capped": emulator_load.CAPPED, "uncapped": emulator_load.UNCAPPED}
    which = [w for w in args.which.split(",") if w]
    results: dict[tuple[str, str], list[emulator_load.MixResult]] = {}
    for rnd in range(1, args.rounds + 1):
        for label, kind, env in variants:
            emu = start_pubsub_emulator(kind, project=PROJECT, extra_env=env)  # type: ignore[arg-type]
            try:
                if args.hold:
                    print(f"pid {emu.process.pid} ({label}); holding {args.hold:g} s", file=sys.stderr, flush=True)
                    time.sleep(args.hold)
                for w in which:
                    u0, s0 = _ustime(emu.process.pid)
                    r = emulator_load.mix(emu.host, emu.process.pid, seconds=args.seconds, tree_cpu_s=tree_cpu_s,
                                          tree_rss_mb=tree_rss_mb, **scenarios[w])
                    u1, s1 = _ustime(emu.process.pid)
                    results.setdefault((label, w), []).append(r)
                    with open("/proc/loadavg") as fh:
                        load = fh.read().split()[0]
                    print(f"round {rnd} {label:>10} {w:>8}: {r.delivered_per_s:7.0f} delivered/s "
                          f"{r.cpu_ms_per_msg:.3f} ms CPU/msg (user {u1 - u0:.1f} s, sys {s1 - s0:.1f} s)  "
                          f"rss {r.rss_max_mb:.0f} MB  load {load}", flush=True)
            finally:
                emu.stop()
    print("medians:")
    for w in which:
        base = None
        for label, _, _ in variants:
            rs = results[(label, w)]
            cpu = statistics.median(r.cpu_ms_per_msg for r in rs)
            dlv = statistics.median(r.delivered_per_s for r in rs)
            if label == "official":
                base = (cpu, dlv)
            print(f"  {w:>8} {label:>10}: {cpu:.3f} ms/msg  {dlv:,.0f} delivered/s  "
                  f"[{', '.join(f'{r.cpu_ms_per_msg:.3f}' for r in rs)}]")
        if base:
            for label, _, _ in variants:
                if label != "official":
                    rs = results[(label, w)]
                    cpu = statistics.median(r.cpu_ms_per_msg for r in rs)
                    dlv = statistics.median(r.delivered_per_s for r in rs)
                    print(f"  {w:>8} {label} / official: CPU {cpu / base[0]:.2f}x, delivered {dlv / base[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
