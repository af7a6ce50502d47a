"""Server time of a plant-sized hub: the opening snapshot and one fan-out, in process.

A hub holding the simulator's plant (``--units`` 7,143 = 50,001 points) behind
the stock protocol on a memory transport (L{hvac_push.testing.MemoryServer}),
so the figures are the server's own CPU time, without the kernel or a client:

- the handshake and opening snapshot of a client subscribed to everything
  (``#``), and of one subscribed to one unit (``plant/<unit>/#``), each built
  for the client; and of a client that opens within a second of another
  and shares its snapshot (L{hvac_push.transport.snapshots});
- one delivery round after 20 point changes (the plant's 2,000 updates/s at
  100 flushes/s) to 250 clients on everything and 250 on one unit each.

Each figure is the median of ``--repeat`` runs (default 5). Example::

    .venv/bin/python benchmarks/plant_snapshot.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main() -> int:
    from hvac_push.core.hub import Hub
    from hvac_push.core.points import Sample
    from hvac_push.sources.simulator import PlantModel
    from hvac_push.testing import MemoryServer
    from hvac_push.transport.protocol import PushServerProtocol
    from run import machine_line

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--units", type=int, default=7143)
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    model = PlantModel(units=args.units, seed=1)
    units = model.unit_names
    try:  # one round in one piece, to time it whole (older builds have no slices)
        server = MemoryServer(PushServerProtocol, slice_clients=0)
    except TypeError:
        server = MemoryServer(PushServerProtocol)
    hub: Hub = server.hub
    hub.publish_many(model.samples(ts=time.time()))
    print(f"Machine: {machine_line()}, load average {os.getloadavg()[0]:.2f}")
    print(f"Command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"\nhub: {len(hub):,} points, {len(units):,} units\n")

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        started = time.process_time()
        fn()
        return time.process_time() - started

    rows = []
    cache = getattr(server.factory, "snapshots", None)
    cases = [("snapshot, everything (#)", "/ws", 0.0), ("snapshot, one unit", f"/ws?points=plant/{units[7]}/%23", 0.0)]
    if cache is not None:
        cases.append(("snapshot, everything (#), shared: another client opened within 1 s", "/ws", 1.0))
    for label, path, max_age in cases:
        if cache is not None:
            cache.max_age = max_age
            if max_age:
                server.connect(path, peer="127.0.1.200").disconnect()  # the client that built it
        times = []
        size = 0
        for k in range(args.repeat):
            conn = {}
            times.append(timed(lambda: conn.setdefault("c", server.connect(path, peer=f"127.0.1.{k + 1}"))))
            size = len(conn["c"].transport.value())
            conn["c"].disconnect()
        rows.append((label, statistics.median(times), size))

    clients = [server.connect(peer=f"127.0.{2 + i // 200}.{i % 200 + 1}",
                              path="/ws" if i % 2 == 0 else f"/ws?points=plant/{units[(i // 2) % len(units)]}/%23")
               for i in range(args.clients)]
    for c in clients:
        c.transport.clear()
    ids = model.point_ids()
    flushes = []
    for k in range(args.repeat):
        batch = [Sample(ids[(k * 997 + j * 2503) % len(ids)], float(k * 100 + j), ts=time.time()) for j in range(20)]
        hub.publish_many(batch)
        flushes.append(timed(lambda: server.advance(0)))
    rows.append((f"one round: 20 changes to {args.clients} clients (half #, half one unit)", statistics.median(flushes), 0))
    print("| what | server CPU time (ms), median | bytes sent |\n|---|---|---|")
    for label, seconds, size in rows:
        print(f"| {label} | {seconds * 1000:.1f} | {size:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
