"""The classic server-push design, in one file, with nothing from hvac-push.

A producer thread writes new data under a lock and bumps a version number.
The event loop wakes up every 100 ms; on each wake-up, every WebSocket
connection compares the version it last sent with the current one and, when
it is behind, sends the current data.

Run it, then connect:  python push_idea.py  and  npx wscat -c ws://localhost:8090
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.task import LoopingCall


class Plant:
    """Shared state: written by the producer thread, read by the event loop, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version = 0
        self.data = {"supply_temp": 7.0, "return_temp": 12.0}

    def write(self, **values: float) -> None:
        with self.lock:
            self.data.update(values)
            self.version += 1

    def read(self) -> tuple[int, dict[str, float]]:
        with self.lock:
            return self.version, dict(self.data)


def produce(plant: Plant, stop: threading.Event, period: float = 0.05) -> None:
    """The producer thread: a new reading every C{period} seconds until stopped."""
    while not stop.wait(period):
        supply = round(6.5 + random.random(), 2)
        plant.write(supply_temp=supply, return_temp=round(supply + 5 + random.random(), 2))


class PushProtocol(WebSocketServerProtocol):
    sent_version = -1  # the version this connection last sent

    def onOpen(self) -> None:
        self.factory.clients.add(self)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.clients.discard(self)


class PushFactory(WebSocketServerFactory):
    protocol = PushProtocol

    def __init__(self, plant: Plant):
        super().__init__()
        self.plant = plant
        self.clients: set[PushProtocol] = set()

    def poll(self) -> None:
        """The event loop's wake-up: every connection that is behind gets the current data."""
        version, data = self.plant.read()
        message = None
        for client in self.clients:
            if client.sent_version < version:
                if message is None:
                    message = json.dumps({"version": version, "data": data}).encode()
                client.sendMessage(message)
                client.sent_version = version


def serve(reactor: Any, port: int = 8090, interval: float = 0.1) -> tuple[Any, LoopingCall, threading.Event]:
    """Start the listener, the poll and the producer; return what stops them."""
    plant = Plant()
    factory = PushFactory(plant)
    listening = reactor.listenTCP(port, factory, interface="127.0.0.1")
    poll = LoopingCall(factory.poll)
    poll.clock = reactor
    poll.start(interval)
    stop = threading.Event()
    threading.Thread(target=produce, args=(plant, stop), daemon=True).start()
    return listening, poll, stop


if __name__ == "__main__":
    from twisted.internet import reactor

    serve(reactor)
    reactor.run()
