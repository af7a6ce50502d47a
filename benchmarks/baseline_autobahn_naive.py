"""Baseline server: the naive Autobahn/Twisted design (per-client encode on a poll timer).

The simulator runs in a thread and hands each publish batch to the reactor with
``reactor.callFromThread``; the reactor stores it in a dict and bumps a global
version counter. A ``LoopingCall`` (5 ms by default) then walks EVERY client: if
the client is behind, it encodes that client's own JSON ``update`` holding the
points newer than the client's last version and calls ``sendMessage``. A client
gets a ``snapshot`` first. This is the classic "server data push" poll, kept
deliberately naive so hvac-push can be measured against it.

Usage: python benchmarks/baseline_autobahn_naive.py --port 8766 [--rate 100] [--poll-ms 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import reactor, task
from twisted.python import log

from hvac_push.sources.simulator import SimulatorProducer

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class Store:
    """Points by id plus a global version; reactor thread only."""

    def __init__(self) -> None:
        self.epoch = str(int(time.time() * 1000))
        self.version = 0
        self.points: dict[str, dict] = {}

    def apply(self, samples) -> None:
        for s in samples:
            self.version += 1
            self.points[s.point_id] = {
                "value": s.value,
                "unit": s.unit,
                "ts": s.ts,
                "version": self.version,
                "status": s.status,
            }


class NaiveProtocol(WebSocketServerProtocol):
    last_version = 0

    def onConnect(self, request):
        if request.path != "/ws":
            raise ConnectionDeny(404, "not found")
        return None

    def onOpen(self):
        store = self.factory.store
        self.last_version = store.version
        snapshot = _dumps(
            {"type": "snapshot", "epoch": store.epoch, "version": store.version,
             "points": store.points}
        )
        self.sendMessage(snapshot.encode("utf-8"), isBinary=False)
        self.factory.clients.add(self)

    def onMessage(self, payload, isBinary):
        pass  # ignore client messages

    def onClose(self, wasClean, code, reason):
        self.factory.clients.discard(self)


class NaiveFactory(WebSocketServerFactory):
    protocol = NaiveProtocol

    def __init__(self, url: str, store: Store):
        super().__init__(url)
        self.setProtocolOptions(perMessageCompressionAccept=lambda offers: None,
                                autoPingInterval=0)
        self.store = store
        self.clients: set[NaiveProtocol] = set()

    def poll(self) -> None:
        """The naive tick: one JSON encode and one sendMessage per lagging client."""
        store = self.store
        version = store.version
        points = store.points
        for client in list(self.clients):
            last = client.last_version
            if last >= version:
                continue
            changed = {pid: p for pid, p in points.items() if p["version"] > last}
            frame = _dumps(
                {"type": "update", "epoch": store.epoch, "version": version, "points": changed}
            )
            client.sendMessage(frame.encode("utf-8"), isBinary=False)
            client.last_version = version


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=100.0, help="simulator samples per second")
    p.add_argument("--units", type=int, default=6)
    p.add_argument("--poll-ms", type=float, default=5.0)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    raise_nofile_limit()
    if args.verbose:
        log.startLogging(sys.stdout)

    store = Store()
    factory = NaiveFactory(f"ws://{args.host}:{args.port}/ws", store)
    stop_sim = threading.Event()

    def publish(samples) -> None:  # simulator thread
        now = time.time()
        stamped = [s if s.ts is not None else type(s)(s.point_id, s.value, s.unit, now, s.status)
                   for s in samples]
        try:
            reactor.callFromThread(store.apply, stamped)
        except Exception:
            pass  # reactor gone during shutdown

    rate = int(args.rate) if float(args.rate).is_integer() else args.rate
    producer = SimulatorProducer(units=args.units, rate=rate, seed=None)
    thread = threading.Thread(target=producer.run, args=(publish, stop_sim), daemon=True,
                              name="simulator")
    poller = task.LoopingCall(factory.poll)

    reactor.listenTCP(args.port, factory, interface=args.host)
    poller.start(args.poll_ms / 1000.0, now=False)
    thread.start()
    reactor.addSystemEventTrigger("before", "shutdown", stop_sim.set)
    print(f"baseline_autobahn_naive listening on ws://{args.host}:{args.port}/ws", flush=True)
    reactor.run()
    thread.join(timeout=2.0)


if __name__ == "__main__":
    main()
