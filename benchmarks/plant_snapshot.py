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

With ``--slow-readers N`` it measures memory instead: the same plant behind
a real listener on 127.0.0.1 (a L{PushService}, the slow-client close off),
C{N} clients in a child process that all open on everything at once and
read slowly (``--read-rate`` bytes per second each, 16 KB receive windows),
while ``--rate`` point updates per second are published. The server's peak
RSS over ``--seconds`` is the figure (the 250 opening snapshots of 5.4 MB
used to wait whole in the transport buffers)::

    .venv/bin/python benchmarks/plant_snapshot.py --slow-readers 250 --seconds 20
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
    p.add_argument("--slow-readers", type=int, default=0, help="measure peak RSS with this many slow readers")
    p.add_argument("--read-rate", type=int, default=200_000, help="bytes/s each slow reader reads")
    p.add_argument("--rate", type=int, default=2000, help="point updates/s published during --slow-readers")
    p.add_argument("--seconds", type=float, default=20.0, help="how long the slow readers read")
    p.add_argument("--reader-child", nargs=2, metavar=("PORT", "CLIENTS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reader_child:
        return slow_reader_child(int(args.reader_child[0]), int(args.reader_child[1]), args.read_rate, args.seconds)
    if args.slow_readers:
        return slow_readers(args)
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


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def slow_readers(args: argparse.Namespace) -> int:
    """Peak server RSS while C{args.slow_readers} clients read the plant's opening snapshot slowly."""
    import json
    import random
    import resource
    import subprocess

    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.task import LoopingCall

    from hvac_push.core.points import Sample
    from hvac_push.ops.service import PushService
    from hvac_push.sources.simulator import PlantModel
    from hvac_push.transport.limits import Limits
    from run import machine_line

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, args.slow_readers * 2 + 256), hard), hard))
    model = PlantModel(units=args.units, seed=1)
    service = PushService(
        reactor, limits=Limits(max_connections_per_ip=0, slow_client_timeout=0), max_connections=args.slow_readers + 10
    )
    service.hub.publish_many(model.samples(ts=time.time()))
    ids = model.point_ids()
    rng = random.Random(1)
    service.startService()
    state: dict[str, object] = {"peak": 0, "samples": 0}
    batch = max(1, args.rate // 100)

    def publish() -> None:
        now = time.time()
        service.hub.publish_many([Sample(rng.choice(ids), rng.random() * 100, "", now) for _ in range(batch)])

    publisher = LoopingCall(publish)

    def sample_rss() -> None:
        state["peak"] = max(int(state["peak"]), rss_bytes())  # type: ignore[call-overload]
        state["connected"] = max(int(state.get("connected", 0)), len(service.factory.clients))  # type: ignore[call-overload]

    sampler = LoopingCall(sample_rss)

    def listening(port: object) -> None:
        state["port"] = port
        state["rss_before"] = rss_bytes()
        number = port.getHost().port  # type: ignore[attr-defined]
        state["child"] = subprocess.Popen(
            [sys.executable, __file__, "--reader-child", str(number), str(args.slow_readers),
             "--read-rate", str(args.read_rate), "--seconds", str(args.seconds)],
            stdout=subprocess.PIPE, text=True,
        )
        if args.rate:
            publisher.start(0.01, now=False)
        sampler.start(0.1)
        state["cpu_before"] = time.process_time()
        reactor.callLater(args.seconds + 5, finish)

    def finish() -> None:
        state["cpu"] = time.process_time() - float(state["cpu_before"])  # type: ignore[arg-type]
        state["skipped_paused"] = service.factory.stats.skipped_paused
        for loop in (publisher, sampler):
            if loop.running:
                loop.stop()
        port = state.get("port")
        if port is not None:
            port.stopListening()  # type: ignore[attr-defined]
        reactor.callLater(0.1, reactor.stop)

    d = serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(service.site())
    d.addCallback(listening)
    reactor.callLater(args.seconds + 60, reactor.stop)  # bounded whatever happens
    reactor.run()
    child = state.get("child")
    readers: dict[str, object] = {}
    if isinstance(child, subprocess.Popen):
        try:
            out, _ = child.communicate(timeout=30)
            readers = json.loads(out.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            child.kill()
    snapshot = len(service.factory.snapshots._entries) and max(
        len(e[2].payload) for e in service.factory.snapshots._entries.values()
    )
    print(f"Machine: {machine_line()}, load average {os.getloadavg()[0]:.2f}")
    print(f"Command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"\nhub: {len(service.hub):,} points; {args.slow_readers} slow readers on everything, "
          f"{args.read_rate:,} B/s each; {args.rate:,} updates/s; {args.seconds:g} s")
    mb = 1024 * 1024
    print("| what | value |\n|---|---|")
    print(f"| server RSS before the readers (MB) | {int(state['rss_before']) / mb:.1f} |")  # type: ignore[call-overload]
    print(f"| server peak RSS while they read (MB) | {int(state['peak']) / mb:.1f} |")  # type: ignore[call-overload]
    print(f"| server CPU over the window (s) | {float(state.get('cpu', 0)):.2f} |")  # type: ignore[arg-type]
    print(f"| clients open at once, most | {state.get('connected')} |")
    print(f"| deliveries skipped while paused or mid-snapshot | {state.get('skipped_paused')} |")
    print(f"| shared snapshot size (bytes) | {snapshot:,} |")
    print(f"| bytes read by the readers, total (MB) | {int(readers.get('bytes', 0)) / mb:.1f} |")  # type: ignore[call-overload]
    past = sum(1 for g in readers.get("each", []) if g > snapshot)  # type: ignore[attr-defined]
    print(f"| readers that read more than the snapshot's size | {past} |")
    return 0


def slow_reader_child(port: int, clients: int, read_rate: int, seconds: float) -> int:
    """The readers: connect all, upgrade, then read C{read_rate} bytes/s each in 10 ticks a second."""
    import json
    import selectors
    import socket

    from hvac_push.testing import upgrade_request

    socks = []
    for _ in range(clients):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", port))
        sock.sendall(upgrade_request("/ws", {"Host": f"127.0.0.1:{port}"}))
        sock.setblocking(False)
        socks.append(sock)
    got = [0] * clients
    chunk = max(1, read_rate // 10)
    selector = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ, i)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        for key, _ in selector.select(timeout=0):
            try:
                data = key.fileobj.recv(chunk)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(key.fileobj)
                continue
            got[key.data] += len(data)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    print(json.dumps({"bytes": sum(got), "each": got}))
    for sock in socks:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
