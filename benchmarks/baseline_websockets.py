"""Baseline server: plain Python ``websockets`` (asyncio), ``broadcast()`` on every update.

It runs the same simulator as hvac-push in a thread. Each publish batch is
handed to the event loop with ``loop.call_soon_threadsafe``; the loop stores the
points, bumps the version and broadcasts one ``update`` frame (only the points
of that batch) to every connected client. A client gets a ``snapshot`` first.

Wire format (JSON text frames), the same as hvac-push::

    {"type":"snapshot","epoch":E,"version":V,"points":{ID:POINT,...}}
    {"type":"update","epoch":E,"version":V,"points":{ID:POINT,...}}
    POINT = {"value":..,"unit":..,"ts":..,"version":N,"status":..}

Usage: python benchmarks/baseline_websockets.py --port 8765 [--rate 100] [--units 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import threading
import time

from websockets.exceptions import ConnectionClosed
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

from hvac_push.sources.simulator import SimulatorProducer

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class State:
    """Current points and the version counter; touched on the event-loop thread only."""

    def __init__(self) -> None:
        self.epoch = str(int(time.time() * 1000))
        self.version = 0
        self.points: dict[str, dict] = {}
        self.clients: set[ServerConnection] = set()

    def apply(self, samples) -> None:
        changed = {}
        for s in samples:
            self.version += 1
            point = {
                "value": s.value,
                "unit": s.unit,
                "ts": s.ts,
                "version": self.version,
                "status": s.status,
            }
            self.points[s.point_id] = point
            changed[s.point_id] = point
        if changed and self.clients:
            frame = _dumps(
                {"type": "update", "epoch": self.epoch, "version": self.version, "points": changed}
            )
            broadcast(self.clients, frame)

    def snapshot(self) -> str:
        return _dumps(
            {"type": "snapshot", "epoch": self.epoch, "version": self.version, "points": self.points}
        )


async def main(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    loop = asyncio.get_running_loop()
    state = State()
    stop_sim = threading.Event()

    def publish(samples) -> None:  # simulator thread
        now = time.time()
        stamped = [s if s.ts is not None else type(s)(s.point_id, s.value, s.unit, now, s.status)
                   for s in samples]
        try:
            loop.call_soon_threadsafe(state.apply, stamped)
        except RuntimeError:
            pass  # loop closed during shutdown

    def only_ws_path(connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != "/ws":
            return connection.respond(404, "not found\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        # Adding to the set and writing the snapshot happen without a yield in
        # between, so no broadcast can slip in before the snapshot.
        state.clients.add(ws)
        try:
            await ws.send(state.snapshot())
            async for _ in ws:  # ignore whatever the client says
                pass
        except ConnectionClosed:
            pass  # clients may drop without a close frame
        finally:
            state.clients.discard(ws)

    rate = int(args.rate) if float(args.rate).is_integer() else args.rate
    producer = SimulatorProducer(units=args.units, rate=rate, seed=None)
    thread = threading.Thread(target=producer.run, args=(publish, stop_sim), daemon=True,
                              name="simulator")
    stopped = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stopped.done() or stopped.set_result(None))

    async with serve(handler, args.host, args.port, process_request=only_ws_path,
                     compression=None, ping_interval=None, max_queue=16):
        thread.start()
        print(f"baseline_websockets listening on ws://{args.host}:{args.port}/ws", flush=True)
        await stopped
        stop_sim.set()
    thread.join(timeout=2.0)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=100.0, help="simulator samples per second")
    p.add_argument("--units", type=int, default=6)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
