"""Store benchmark: samples per second the SQLite store sustains, bytes per sample, and a 24-hour query.

Writes a day of samples for C{--points} points (one every C{--interval}
seconds each) through the same L{StoreWriter} the server uses, in the batches
the server hands over, into a fresh file in a temporary folder; then times
the query C{/api/history} runs for all points over those 24 hours (automatic
step: one-minute rollups), and the raw samples of one point over the last hour.
Bounded: the defaults write 864,000 samples and take well under a minute.

    .venv/bin/python benchmarks/store_ingest.py
    .venv/bin/python benchmarks/store_ingest.py --points 100 --interval 10 --batch 500
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hvac_push.core.points import Point  # noqa: E402
from hvac_push.store.query import choose_step, series  # noqa: E402
from hvac_push.store.sqlite import SqliteStore  # noqa: E402
from hvac_push.store.writer import StoreWriter  # noqa: E402

DAY = 86400.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples of one point")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--batch", type=int, default=500, help="samples per hand-over (the server's flush)")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="hvac-store-bench-")
    path = os.path.join(folder, "bench.db")
    store = SqliteStore(path)
    store.open()
    writer = StoreWriter(store, max_pending=10_000_000)
    writer.start()
    ids = [f"plant/unit-{i // 10}/point_{i % 10}" for i in range(args.points)]
    t0 = 1_800_000_000.0
    steps = int(args.hours * 3600 / args.interval)
    total = steps * len(ids)

    started = time.perf_counter()
    cpu_started = time.process_time()
    pending: list[Point] = []
    for step in range(steps):
        ts = t0 + step * args.interval
        for index, point_id in enumerate(ids):
            pending.append(Point(point_id, 20.0 + ((step + index) % 50) / 10.0, "degC", ts + index * 0.001, "ok", 0))
        if len(pending) >= args.batch:
            writer.add_samples(pending)
            pending = []
    writer.add_samples(pending)
    handed = time.perf_counter() - started
    if not writer.wait_idle(600):
        print("the writer did not finish within 10 minutes")
        return 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    stats = writer.stats
    writer.close()
    writer.join(10)

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(path)
    raw_rows = conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    minute_rows = conn.execute("SELECT COUNT(*) FROM rollup_minute").fetchone()[0]
    hour_rows = conn.execute("SELECT COUNT(*) FROM rollup_hour").fetchone()[0]
    conn.close()

    end = t0 + args.hours * 3600
    start = end - DAY
    step = choose_step(start, end, None)
    query_started = time.perf_counter()
    values = sum(len(series(store, point_id, start, end, step, "mean")) for point_id in ids)
    query_seconds = time.perf_counter() - query_started
    raw_started = time.perf_counter()
    raw = series(store, ids[0], end - 3600, end, None, "mean")
    raw_seconds = time.perf_counter() - raw_started
    store.close()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}")
    print(f"ingest: {total:,} samples ({len(ids)} points x {steps:,}) in {elapsed:.2f} s = "
          f"{total / elapsed:,.0f} samples/s (hand-over took {handed:.2f} s; process CPU {cpu:.2f} s)")
    print(f"writer: {stats.transactions:,} transactions, {stats.samples_dropped} dropped, {stats.failures} failures")
    print(f"file: {size / 1e6:.1f} MB for {raw_rows:,} raw rows, {minute_rows:,} minute and {hour_rows:,} hour "
          f"rollups = {size / raw_rows:.0f} bytes per sample, all included")
    print(f"query: {len(ids)} points x 24 h at step {step:g} s -> {values:,} values in {query_seconds * 1000:.0f} ms")
    print(f"query: 1 point x 1 h raw -> {len(raw):,} samples in {raw_seconds * 1000:.1f} ms")
    os.remove(path)
    os.rmdir(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
