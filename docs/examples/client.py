"""Print live points from an hvac-push server.

    python client.py ws://localhost:8080/ws 'plant/+/supply_temp'
    python client.py ws://localhost:8080/ws --count 10      # stop after 10 lines
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet.defer import Deferred
from twisted.internet.task import react


class TelemetryClient(WebSocketClientProtocol):
    """Keeps the latest value of every point and prints each change."""

    def onOpen(self) -> None:
        self.points: dict[str, dict[str, Any]] = {}

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        if message["type"] in ("snapshot", "update"):
            for point_id, point in message["points"].items():
                self.points[point_id] = point
                self.factory.show(point_id, point)
        elif message["type"] == "error":
            print(f"server says: {message['error']}: {message['detail']}", file=sys.stderr)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closed(code, reason)


class TelemetryFactory(WebSocketClientFactory):
    protocol = TelemetryClient

    def __init__(self, url: str, count: int | None, done: Deferred[int]):
        super().__init__(url, protocols=["hvac-push.v1"])
        self.count = count
        self.done = done
        self.client: TelemetryClient | None = None

    def buildProtocol(self, addr: Any) -> Any:
        self.client = super().buildProtocol(addr)
        return self.client

    def show(self, point_id: str, point: dict[str, Any]) -> None:
        if self.count is not None:
            if self.count == 0:
                return  # done: the rest of this message, and whatever arrives before the close, is not shown
            self.count -= 1
        print(f"{point_id} = {point['value']} {point['unit']}".rstrip(), flush=True)
        if self.count == 0 and self.client is not None:
            self.client.sendClose()

    def closed(self, code: int | None, reason: str | None) -> None:
        if not self.done.called:
            self.done.callback(0 if code in (1000, 1001) else 1)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        print(f"cannot connect: {reason.getErrorMessage()}", file=sys.stderr)
        if not self.done.called:
            self.done.callback(1)


def positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def main(reactor: Any, *argv: str) -> Deferred[int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="e.g. ws://localhost:8080/ws")
    parser.add_argument("patterns", nargs="*", help="points to follow, e.g. plant/+/supply_temp")
    parser.add_argument("--count", type=positive, help="print this many point lines, then stop")
    args = parser.parse_args(argv)
    url = args.url
    if args.patterns:
        url += "?points=" + ",".join(quote(p, safe="/+") for p in args.patterns)
    done: Deferred[int] = Deferred()
    connectWS(TelemetryFactory(url, args.count, done))
    return done


if __name__ == "__main__":
    react(lambda reactor: main(reactor, *sys.argv[1:]).addCallback(sys.exit))
