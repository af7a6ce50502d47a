"""hvac_push.transport.streaming over real sockets: a snapshot above the threshold arrives in fragments
while updates flow, and the clients (a raw socket and Autobahn's reassembling one) miss nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from twisted.internet.task import LoopingCall

from hvac_push.core.points import EVERYTHING, Sample
from hvac_push.testing import PushClient, connect
from hvac_push.transport.streaming import STREAM_THRESHOLD
from hvac_push.transport.wire import encode_point
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, within
from tests.nbsock import CONTINUATION, TEXT, RawSocket

POINTS = 6000  # a snapshot of about 0.6 MB
CHANGING = [f"plant/unit-{k}/point-0" for k in range(0, 700, 70)]


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class ViewClient(PushClient):
    """Applies snapshots and updates to one view, and notes each message's size and version."""

    def __init__(self) -> None:
        super().__init__()
        self.view: dict[str, Any] = {}
        self.versions: list[int] = []
        self.sizes: list[int] = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        if message["type"] in ("snapshot", "update"):
            self.view.update(message["points"])
            self.versions.append(message["version"])
            self.sizes.append(len(payload))


@pytest_twisted.ensureDeferred
async def test_clients_read_a_fragmented_snapshot_while_updates_flow_and_end_with_every_point_in_order():
    r = reactor()
    running = await start_server(interval=0.05)
    hub = running.hub
    hub.publish_many([Sample(f"plant/unit-{i // 7}/point-{i % 7}", float(i), "°C", 1.0) for i in range(POINTS)])
    rounds = {"n": 0}

    def publish() -> None:
        rounds["n"] += 1
        n = rounds["n"]
        hub.publish_many([Sample(p, 1000.0 + n, "°C", 1.0 + n) for p in CHANGING])

    publisher = LoopingCall(publish)
    publisher.clock = r
    finished = publisher.start(0.01, now=False)
    raw = RawSocket(running.port, rcvbuf=16 * 1024)  # a slow, small-windowed reader
    try:
        autobahn = await within(10, connect(r, running.port, client=ViewClient))
        assert await raw.upgrade() == 101
        # The raw reader sees the fragments as sent: text without FIN, continuations, the last with FIN.
        opcode, payload, fin = await raw.read_frame_fin(timeout=10)
        assert opcode == TEXT and not fin
        parts = [payload]
        while not fin:
            opcode, payload, fin = await raw.read_frame_fin(timeout=10)
            assert opcode == CONTINUATION
            parts.append(payload)
        assert len(parts) > 2
        snapshot = json.loads(b"".join(parts))
        assert snapshot["type"] == "snapshot" and len(snapshot["points"]) == POINTS
        view = dict(snapshot["points"])
        versions = [snapshot["version"]]
        await eventually(lambda: rounds["n"] >= 30, timeout=20)
        publisher.stop()
        await finished
        final = hub.version
        for _ in range(200):  # bounded: updates are conflated, far fewer than this are due
            if versions[-1] == final:
                break
            update = await raw.read_json(timeout=10)
            assert update["type"] == "update"
            view.update(update["points"])
            versions.append(update["version"])
        await eventually(lambda: autobahn.versions and autobahn.versions[-1] == final, timeout=20)

        expected = {p.point_id: encode_point(p) for p in hub.points(EVERYTHING)}
        for seen, order in ((view, versions), (autobahn.view, autobahn.versions)):
            assert seen == expected
            assert order == sorted(set(order))  # every message newer than the one before
        assert autobahn.sizes[0] > STREAM_THRESHOLD  # Autobahn reassembled the fragmented snapshot
        assert len(autobahn.view) == POINTS
    finally:
        if publisher.running:
            publisher.stop()
        raw.close()
        await stop_server(running)
