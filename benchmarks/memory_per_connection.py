"""Server memory per WebSocket connection: tracemalloc and RSS per 1,000 open clients.

The server is a L{PushService} in this process (real reactor, a real
listener on 127.0.0.1, the simulator's 42 points published once); the
clients are the C load generator (``benchmarks/loadgen.c``) in a child
process, which connects them all and holds them open. Two passes, each in a
fresh interpreter so neither disturbs the other:

- ``rss``: the resident set before and after the clients connect;
- ``trace``: tracemalloc started before the clients connect, and the
  allocation sites that grew, so one can see whose memory a connection is
  (Autobahn's protocol state, Twisted's transport, ours).

Examples::

    .venv/bin/python benchmarks/memory_per_connection.py               # 2,000 clients
    .venv/bin/python benchmarks/memory_per_connection.py --clients 5000 --top 15

Bounded: the load generator exits by itself; the server gives up after
``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def serve(mode: str, clients: int, loadgen: str, timeout: float, top: int) -> dict[str, object]:
    """One pass: listen, let the load generator connect C{clients}, measure, stop."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from hvac_push.core.points import Sample
    from hvac_push.ops.service import PushService
    from hvac_push.transport.limits import Limits

    service = PushService(reactor, limits=Limits(max_connections_per_ip=0), max_connections=clients + 10)
    units = [f"plant/ahu-{i}" for i in range(1, 7)]
    names = ["supply_temp", "return_temp", "fan_speed", "valve", "power", "status", "setpoint"]
    service.hub.publish_many(
        [Sample(f"{u}/{n}", float(k), "", time.time()) for u in units for k, n in enumerate(names)]
    )
    service.startService()
    result: dict[str, object] = {"mode": mode, "clients": clients}
    state: dict[str, object] = {}

    def listening(port: object) -> None:
        state["port"] = port
        if mode == "trace":
            tracemalloc.start(1)
            state["before"] = tracemalloc.take_snapshot()
        state["rss_before"] = rss_bytes()
        number = port.getHost().port  # type: ignore[attr-defined]
        hold = timeout + 5
        state["loadgen"] = subprocess.Popen(
            [loadgen, "127.0.0.1", str(number), "/ws", str(clients), "2", str(hold)],
            stdout=subprocess.PIPE, text=True,
        )
        state["deadline"] = time.monotonic() + timeout
        reactor.callLater(0.2, check)

    def check() -> None:
        connected = len(service.factory.clients)
        history = state.setdefault("counts", [])
        history.append(connected)  # type: ignore[attr-defined]
        steady = len(history) >= 15 and connected > 0 and history[-15] == connected  # type: ignore[arg-type,index]
        if connected >= clients or steady:
            reactor.callLater(0.5, measure)  # let the last snapshots go out
            return
        if time.monotonic() > state["deadline"]:  # type: ignore[operator]
            result["error"] = f"only {connected}/{clients} clients connected within {timeout:g}s"
            proc = state["loadgen"]
            if isinstance(proc, subprocess.Popen) and proc.poll() is not None and proc.stdout is not None:
                result["loadgen"] = proc.stdout.read()[-500:]
            finish()
            return
        reactor.callLater(0.2, check)

    def measure() -> None:
        count = len(service.factory.clients)
        result["connected"] = count
        result["rss_growth_per_1000_kb"] = round((rss_bytes() - state["rss_before"]) / count * 1000 / 1024, 1)  # type: ignore[operator]
        if mode == "trace":
            after = tracemalloc.take_snapshot()
            stats = after.compare_to(state["before"], "lineno")  # type: ignore[arg-type]
            grown = sum(s.size_diff for s in stats)
            result["traced_per_1000_kb"] = round(grown / count * 1000 / 1024, 1)
            result["top"] = [
                {"where": str(s.traceback[0]), "per_connection_bytes": round(s.size_diff / count),
                 "blocks_per_connection": round(s.count_diff / count, 2)}
                for s in stats[:top]
            ]
            tracemalloc.stop()
        finish()

    def finish() -> None:
        proc = state.get("loadgen")
        if isinstance(proc, subprocess.Popen) and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        port = state.get("port")
        if port is not None:
            port.stopListening()  # type: ignore[attr-defined]
        reactor.callLater(0.1, reactor.stop)

    d = serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(service.site())
    d.addCallback(listening)
    d.addErrback(lambda f: (result.__setitem__("error", str(f.value)), reactor.stop()))
    reactor.callLater(timeout + 30, reactor.stop)
    reactor.run()
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=2000)
    p.add_argument("--top", type=int, default=12, help="allocation sites to list")
    p.add_argument("--timeout", type=float, default=90.0)
    p.add_argument("--serve", choices=("rss", "trace"), help=argparse.SUPPRESS)
    p.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not 1 <= args.clients <= 20000:
        p.error("--clients must be within [1, 20000]")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.clients + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    if args.serve:
        print(json.dumps(serve(args.serve, args.clients, args.loadgen, args.timeout, args.top)))
        return 0
    from run import compile_loadgen, machine_line

    results = []
    with tempfile.TemporaryDirectory(prefix="hvac-mem-") as tmp:
        loadgen = compile_loadgen(tmp)
        for mode in ("rss", "trace"):
            out = subprocess.run(
                [sys.executable, __file__, "--serve", mode, "--clients", str(args.clients), "--loadgen", loadgen,
                 "--top", str(args.top), "--timeout", str(args.timeout)],
                capture_output=True, text=True, timeout=args.timeout + 60,
            )
            lines = out.stdout.strip().splitlines()
            if not lines:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            results.append(json.loads(lines[-1]))
    print(f"Machine: {machine_line()}")
    print(f"Command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    rss, trace = results
    for r in results:
        if "error" in r:
            print(f"{r['mode']}: {r['error']}")
    print(f"\n{args.clients} clients: RSS growth {rss.get('rss_growth_per_1000_kb')} KB per 1,000 connections "
          f"(tracemalloc: {trace.get('traced_per_1000_kb')} KB per 1,000 of Python allocations)\n")
    print("| allocation site | bytes per connection | blocks per connection |\n|---|---|---|")
    for row in trace.get("top", []):  # type: ignore[union-attr]
        where = str(row["where"]).replace(str(HERE.parent) + "/", "")
        where = where.split("site-packages/")[-1]
        print(f"| {where} | {row['per_connection_bytes']} | {row['blocks_per_connection']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
