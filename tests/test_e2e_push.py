"""hvac_push.ops.service end to end (hvac_push.transport.fanout, hvac_push.transport.protocol,
hvac_push.sources.supervisor): a real listener on 127.0.0.1:0 and real Autobahn clients."""

from __future__ import annotations

import threading

import pytest_twisted
from twisted.internet.defer import DeferredList

from hvac_push.core.points import Sample
from hvac_push.testing import ScriptedProducer, connect, handshake_status
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, within


def reactor():
    from twisted.internet import reactor

    return reactor


@pytest_twisted.ensureDeferred
async def test_client_gets_a_snapshot_then_updates_published_from_another_thread(server):
    server.hub.publish(Sample("plant/chiller-1/supply_temp", 7.0, "°C", 1.0))
    client = await within(5, connect(reactor(), server.port))
    snapshot = await within(5, client.next())
    assert snapshot["type"] == "snapshot" and snapshot["epoch"] == server.hub.epoch
    assert snapshot["points"]["plant/chiller-1/supply_temp"]["value"] == 7.0

    thread = threading.Thread(
        target=server.service.publisher.publish, args=("plant/chiller-1/supply_temp", 6.5, "°C", 2.0)
    )
    thread.start()
    thread.join()
    update = await within(5, client.next("update"))
    assert update["points"]["plant/chiller-1/supply_temp"]["value"] == 6.5
    assert update["version"] == server.hub.version
    client.sendClose()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_subscribe_and_unsubscribe_over_a_real_socket(server):
    hub = server.hub
    hub.publish_many([Sample("plant/ahu-1/fan_speed", 50, "%", 1.0), Sample("plant/ahu-1/power", 3.0, "kW", 1.0)])
    client = await within(5, connect(reactor(), server.port, "/ws?points=plant/+/fan_speed"))
    assert set((await within(5, client.next()))["points"]) == {"plant/ahu-1/fan_speed"}

    client.send_json({"type": "subscribe", "points": ["plant/ahu-1/#"]})
    added = await within(5, client.next("snapshot"))
    assert set(added["points"]) == {"plant/ahu-1/power"}

    client.send_json({"type": "unsubscribe", "points": ["plant/+/fan_speed", "plant/ahu-1/#"]})
    client.send_json({"type": "ping", "id": "after-unsub"})
    await within(5, client.next("pong"))
    hub.publish(Sample("plant/ahu-1/power", 4.0, "kW", 2.0))
    client.send_json({"type": "subscribe", "points": ["plant/ahu-1/power"]})
    again = await within(5, client.next())
    assert again["type"] == "snapshot" and again["points"]["plant/ahu-1/power"]["value"] == 4.0
    client.sendClose()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_refused_handshakes_get_404_403_503_and_400():
    running = await start_server(allowed_origins=["https://ops.example"], max_connections=1)
    try:
        r = reactor()
        assert await within(5, handshake_status(r, running.port, "/nope")) == 404
        assert await within(5, handshake_status(r, running.port, headers={"Origin": "https://evil.example"})) == 403
        assert await within(5, handshake_status(r, running.port, "/ws?points=a/%23/b")) == 400
        first = await within(5, connect(r, running.port, origin="https://ops.example"))
        assert await within(5, handshake_status(r, running.port)) == 503
        first.sendClose()
        await first.closed
        await eventually(lambda: not running.factory.clients)
        assert await within(5, handshake_status(r, running.port)) == 101
    finally:
        await stop_server(running)
    assert running.factory.stats.handshakes_denied == {403: 1, 400: 1, 503: 1}


@pytest_twisted.ensureDeferred
async def test_bad_json_gets_an_error_and_the_connection_keeps_working(server):
    client = await within(5, connect(reactor(), server.port))
    await within(5, client.next("snapshot"))
    client.sendMessage(b"{this is not json")
    error = await within(5, client.next("error"))
    assert error["error"] == "bad_json"
    client.sendMessage(b"\x01\x02", isBinary=True)
    assert (await within(5, client.next("error")))["error"] == "binary_not_supported"
    client.send_json({"type": "ping", "id": 1})
    assert await within(5, client.next("pong")) == {"type": "pong", "id": 1}
    server.hub.publish(Sample("plant/u/p", 1, ts=5.0))
    assert (await within(5, client.next("update")))["points"]["plant/u/p"]["value"] == 1
    client.sendClose()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_a_crashing_producer_is_restarted_while_clients_keep_receiving():
    producer = ScriptedProducer(
        [[Sample("plant/u/boot", 1, ts=None)]],
        crash_after=1,
        crashes=2,
        interval=0.02,
        heartbeat=lambda i: [Sample("plant/u/beat", i)],
    )
    running = await start_server([producer])
    running.service.producers[0].initial_backoff = 0.05
    try:
        client = await within(5, connect(reactor(), running.port))
        beats: list[float] = []
        while len(beats) < 5:
            update = await within(10, client.next("update"))
            if "plant/u/beat" in update["points"]:
                beats.append(update["points"]["plant/u/beat"]["value"])
        status = running.service.producers[0].status
        assert status.restarts >= 1 and "scripted crash" in status.last_error
        assert producer.runs >= 2
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_stopping_the_service_says_going_away_to_every_client_and_joins_producers():
    producer = ScriptedProducer([], interval=0.01, heartbeat=lambda i: [Sample("plant/u/beat", i)])
    running = await start_server([producer])
    clients = [await within(5, connect(reactor(), running.port)) for _ in range(3)]
    await running.listening.stopListening()
    await within(10, running.service.stopService())
    closes = await within(5, DeferredList([c.closed for c in clients]))
    assert [result[1][1] for result in closes] == [1001, 1001, 1001]
    assert running.service.producers[0].status.state == "stopped"
    assert not running.factory.connections


@pytest_twisted.ensureDeferred
async def test_healthz_reports_a_json_summary(server):
    from twisted.web.client import Agent, readBody

    agent = Agent(reactor())
    response = await within(5, agent.request(b"GET", f"http://127.0.0.1:{server.port}/healthz".encode()))
    import json

    body = json.loads(await within(5, readBody(response)))
    assert response.code == 200
    assert body["ready"] is True and body["epoch"] == server.hub.epoch
