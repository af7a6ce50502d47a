"""Paths of hvac_push.transport.protocol that other end-to-end tests never take, over real sockets:
permessage-deflate, history and ack refused (forbidden, unavailable), and a send error on the direct path."""

from __future__ import annotations

import errno
import socket
import time
from typing import Any, cast

import jwt
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString

from hvac_push.core.hub import Hub
from hvac_push.core.points import AlarmLimits, Sample
from hvac_push.testing import PushClient, connect
from hvac_push.transport.auth import Authenticator, JWTVerifier
from hvac_push.transport.fanout import PushServerFactory
from hvac_push.transport.limits import Limits
from hvac_push.transport.protocol import PushServerProtocol
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, until_state, within

T = "plant/chiller-1/supply_temp"
SECRET = b"s" * 48


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def accept_deflate(offers: list[Any]) -> Any:
    """The server side: accept a client's permessage-deflate offer."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


async def connect_deflate(port: int, path: str = "/ws") -> PushClient:
    """A client that offers permessage-deflate (as browsers do) and accepts the server's answer."""
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}", reactor=reactor())
    factory.setProtocolOptions(
        perMessageCompressionOffers=[PerMessageDeflateOffer()],
        perMessageCompressionAccept=lambda r: PerMessageDeflateResponseAccept(r)
        if isinstance(r, PerMessageDeflateResponse) else None,
    )
    factory.protocol = PushClient
    proto = cast(PushClient, await TCP4ClientEndpoint(reactor(), "127.0.0.1", port, timeout=5).connect(factory))
    client: PushClient = await within(5, proto.opened)
    return client


async def closed(client: PushClient) -> None:
    client.sendClose()
    await within(5, client.closed)


def token(**claims: Any) -> str:
    return jwt.encode({"exp": int(time.time() + 600), **claims}, SECRET, algorithm="HS256")


@pytest_twisted.ensureDeferred
async def test_a_client_offering_permessage_deflate_gets_compressed_updates_that_decode_exactly() -> None:
    running = await start_server(
        ws_options={"perMessageCompressionAccept": accept_deflate}, limits=Limits(max_message_size=4096)
    )
    try:
        # A snapshot bigger than --max-message-size still arrives whole through the compressed path.
        running.hub.publish_many([Sample(f"plant/ahu-{i}/supply_temp", 14.0 + i / 100, "°C", 1.0) for i in range(200)])
        compressed = await connect_deflate(running.port)
        plain = await within(5, connect(reactor(), running.port))
        snapshot = await within(5, compressed.next("snapshot"))
        assert len(snapshot["points"]) == 200
        assert (await within(5, plain.next("snapshot")))["points"] == snapshot["points"]

        # Autobahn leaves _perMessageCompress unannotated (mypy would infer "always None").
        assert getattr(compressed, "_perMessageCompress") is not None, "the client did not negotiate permessage-deflate"
        deflating = [p for p in running.factory.clients if getattr(p, "_perMessageCompress") is not None]
        assert len(deflating) == 1 and deflating[0].direct_socket is None  # never the raw-frame path

        for value in (6.5, 6.75, 7.0):
            running.hub.publish(Sample(T, value, "°C", 2.0 + value))
        for client in (compressed, plain):
            state = await until_state(client, lambda points: points.get(T, {}).get("value") == 7.0)
            assert state[T]["unit"] == "°C"
        await closed(compressed)
        await closed(plain)
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_history_and_ack_are_forbidden_without_the_grant_or_the_ack_claim() -> None:
    running = await start_server(authenticator=Authenticator([JWTVerifier(SECRET, "HS256")]))
    try:
        running.service.set_alarm_limits(T, AlarmLimits(low=5.0))
        running.hub.publish(Sample(T, 4.0, "°C", reactor().seconds()))
        running.hub.publish(Sample("plant/ahu-1/supply_temp", 14.0, "°C", reactor().seconds()))
        headers = {"Authorization": f"Bearer {token(points=['plant/ahu-1/#'])}"}
        viewer = await within(5, connect(reactor(), running.port, headers=headers))
        await within(5, viewer.next("snapshot"))
        viewer.send_json({"type": "history", "point": T, "since": 0})
        refused = await within(5, viewer.next("error"))
        assert refused["error"] == "forbidden" and T in refused["detail"]
        viewer.send_json({"type": "ack", "alarm": f"{T}:low"})
        assert (await within(5, viewer.next("error")))["error"] == "forbidden"
        # The same point is fine for history within the grant; the connection stays open.
        viewer.send_json({"type": "history", "point": "plant/ahu-1/supply_temp", "since": 0})
        assert (await within(5, viewer.next("history")))["point"] == "plant/ahu-1/supply_temp"

        reader = await within(5, connect(
            reactor(), running.port, headers={"Authorization": f"Bearer {token(points=['#'])}"}))
        await within(5, reader.next("snapshot"))
        reader.send_json({"type": "ack", "alarm": f"{T}:low"})
        no_claim = await within(5, reader.next("error"))
        assert no_claim == {"type": "error", "error": "forbidden", "detail": "not allowed to acknowledge alarms"}
        assert running.service.alarms.alarms[f"{T}:low"].state == "active"  # nothing was acknowledged

        operator = await within(5, connect(
            reactor(), running.port, headers={"Authorization": f"Bearer {token(points=['#'], ack=True)}"}))
        await within(5, operator.next("snapshot"))
        operator.send_json({"type": "ack", "alarm": f"{T}:low"})
        assert (await within(5, operator.next("acked")))["alarm"] == f"{T}:low"
        for client in (viewer, reader, operator):
            await closed(client)
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_history_and_ack_are_unavailable_on_a_bare_factory_without_them() -> None:
    # An application embedding the fan-out alone (docs/extending.md) has no history and no alarms.
    hub = Hub()
    factory = PushServerFactory(hub, reactor())
    factory.protocol = PushServerProtocol
    factory.start()
    port = await serverFromString(reactor(), "tcp:0:interface=127.0.0.1").listen(factory)
    try:
        hub.publish(Sample(T, 6.0, "°C", 1.0))
        client = await within(5, connect(reactor(), port.getHost().port, "/"))
        await within(5, client.next("snapshot"))
        client.send_json({"type": "history", "point": T, "since": 0})
        assert (await within(5, client.next("error")))["error"] == "unavailable"
        client.send_json({"type": "ack", "alarm": f"{T}:low"})
        assert (await within(5, client.next("error")))["error"] == "unavailable"
        client.send_json({"type": "ping", "id": "still-served"})
        assert (await within(5, client.next("pong")))["id"] == "still-served"
        await closed(client)
    finally:
        await port.stopListening()
        factory.stop()
        await within(5, factory.when_drained())


class FailingSocket:
    """Stands for a client socket whose C{send} fails (EPIPE, as after a reset); all else is the real socket."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.failures = 0

    def send(self, data: bytes) -> int:
        self.failures += 1
        raise OSError(errno.EPIPE, "Broken pipe")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest_twisted.ensureDeferred
async def test_a_send_error_on_the_direct_path_falls_back_to_the_transport_and_others_keep_receiving() -> None:
    running = await start_server()
    try:
        running.hub.publish(Sample(T, 6.0, "°C", 1.0))
        failing_client = await within(5, connect(reactor(), running.port))
        other = await within(5, connect(reactor(), running.port))
        for client in (failing_client, other):
            await within(5, client.next("snapshot"))
        await eventually(lambda: len(running.factory.clients) == 2)
        local_port = failing_client.transport.getHost().port  # type: ignore[union-attr]
        [failing] = [p for p in running.factory.clients if p.transport.getPeer().port == local_port]
        assert failing.direct_socket is not None
        injected = FailingSocket(failing.direct_socket)
        failing.direct_socket = cast(socket.socket, injected)

        for value in (6.5, 7.0, 7.5):
            running.hub.publish(Sample(T, value, "°C", 2.0 + value))
        for client in (failing_client, other):
            await until_state(client, lambda points: points.get(T, {}).get("value") == 7.5)
        assert injected.failures >= 1, "the direct send path was not taken"
        assert failing in running.factory.clients  # the client survived the error

        # A client that really goes away (reset) is dropped; the other keeps receiving.
        cast(Any, failing_client.transport).abortConnection()
        await eventually(lambda: len(running.factory.clients) == 1)
        running.hub.publish(Sample(T, 8.0, "°C", 20.0))
        await until_state(other, lambda points: points.get(T, {}).get("value") == 8.0)
        await closed(other)
    finally:
        await stop_server(running)
