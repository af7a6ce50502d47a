"""Micro-benchmark: what one latency observation (L{Buckets.observe}) costs.

An observation runs once per flush and once per changed point per frame,
never per client, so it must stay far below the per-client send cost
(several microseconds). Bounded: C{--count} observations (100,000 by default),
repeated C{--repeat} times; prints the best and median cost per call.

    .venv/bin/python benchmarks/metrics_observe.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hvac_push.ops.metrics import Buckets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    buckets = Buckets([0.001 * 2**i for i in range(14)])
    per_call = []
    for _ in range(max(1, args.repeat)):
        started = time.perf_counter()
        for i in range(args.count):
            buckets.observe(i * 1e-6)
        per_call.append((time.perf_counter() - started) / args.count)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"Buckets.observe: best {min(per_call) * 1e9:.0f} ns, median {statistics.median(per_call) * 1e9:.0f} ns per call")


if __name__ == "__main__":
    main()
