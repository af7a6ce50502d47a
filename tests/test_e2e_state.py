"""hvac_push.analytics (staleness, alarms, history), hvac_push.transport.cov_filter and resume in
hvac_push.transport.protocol, end to end over real sockets."""

from __future__ import annotations

import pytest_twisted

from hvac_push.core.points import AlarmLimits, PointMeta, Sample
from hvac_push.testing import ScriptedProducer, connect
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, within

T = "plant/chiller-1/supply_temp"


def reactor():
    from twisted.internet import reactor

    return reactor


def now() -> float:
    seconds: float = reactor().seconds()
    return seconds


async def open_client(server, path="/ws"):
    client = await within(5, connect(reactor(), server.port, path))
    first = await within(5, client.next())
    return client, first


async def close(client):
    client.sendClose()
    await within(5, client.closed)


async def next_point(client, point_id, predicate=lambda p: True, timeout=5):
    while True:
        message = await within(timeout, client.next("update"))
        point = message["points"].get(point_id)
        if point is not None and predicate(point):
            return point


@pytest_twisted.ensureDeferred
async def test_a_silent_point_goes_stale_and_the_client_is_told():
    server = await start_server(stale_check=0.05)
    try:
        server.hub.configure(T, PointMeta(expected_interval=0.1))
        server.hub.publish(Sample(T, 7.0, "°C", now()))
        client, _ = await open_client(server)
        point = await next_point(client, T, lambda p: p["status"] == "stale")
        assert point["value"] == 7.0
        alarm = await within(5, client.next("alarm"))
        assert alarm["alarm"]["kind"] == "stale" and alarm["alarm"]["state"] == "active"
        server.hub.publish(Sample(T, 7.1, "°C", now()))
        assert (await next_point(client, T, lambda p: p["status"] == "ok"))["value"] == 7.1
        await close(client)
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_a_crashing_source_puts_its_points_in_fault_until_it_publishes_again():
    producer = ScriptedProducer([[Sample(T, 6.5, "°C")]], crash_after=1, crashes=1, interval=0.3)
    server = await start_server()
    client, _ = await open_client(server)  # connected before the source starts
    producer_service = server.service.add_producer(producer)
    producer_service.initial_backoff = 0.5
    try:
        faulted = await next_point(client, T, lambda p: p["status"] == "fault")
        assert faulted["value"] == 6.5
        assert (await within(5, client.next("alarm")))["alarm"]["kind"] == "fault"
        assert (await next_point(client, T, lambda p: p["status"] == "ok"))["value"] == 6.5
        await close(client)
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_resume_after_many_updates_sends_one_update_with_exactly_what_changed(server):
    hub = server.hub
    hub.publish_many([Sample(f"plant/u{i}/t", 0, "", now()) for i in range(20)])
    client, snapshot = await open_client(server, "/ws?points=plant/%2B/t")
    version, epoch = snapshot["version"], snapshot["epoch"]
    await close(client)
    for round_ in range(1, 51):
        hub.publish_many([Sample(f"plant/u{i}/t", round_, "", now()) for i in range(0, 20, 2)])
    hub.publish(Sample("plant/other/x", 1, "", now()))  # outside the subscription
    client, first = await open_client(server, f"/ws?points=plant/%2B/t&since={version}&epoch={epoch}")
    assert first["type"] == "update" and first["version"] == hub.version
    assert {k: v["value"] for k, v in first["points"].items()} == {f"plant/u{i}/t": 50 for i in range(0, 20, 2)}
    await close(client)


@pytest_twisted.ensureDeferred
async def test_resume_against_another_epoch_gets_a_full_resync_snapshot(server):
    server.hub.publish(Sample(T, 7.0, "°C", now()))
    client, first = await open_client(server, "/ws?since=5&epoch=not-this-one")
    assert first["type"] == "snapshot" and first["resync"] is True
    assert first["points"][T]["value"] == 7.0 and first["epoch"] == server.hub.epoch
    client.send_json({"type": "resume", "since": 0, "epoch": server.hub.epoch})
    again = await within(5, client.next("update"))
    assert again["points"][T]["value"] == 7.0
    await close(client)


@pytest_twisted.ensureDeferred
async def test_an_alarm_waits_for_its_delay_and_clears_past_the_deadband(server):
    server.service.set_alarm_limits(T, AlarmLimits(high=8.0, deadband=0.5, delay=0.3, severity="critical"))
    server.hub.publish(Sample(T, 7.0, "°C", now()))
    client, snapshot = await open_client(server)
    assert snapshot["alarms"] == [] and snapshot["alarm_seq"] == 0
    raised_at = now()
    server.hub.publish(Sample(T, 8.4, "°C", now()))
    alarm = await within(5, client.next("alarm"))
    assert now() - raised_at >= 0.3
    assert alarm["seq"] == 1 and alarm["alarm"]["state"] == "active" and alarm["alarm"]["severity"] == "critical"
    server.hub.publish(Sample(T, 7.8, "°C", now()))  # inside the deadband: stays active
    server.hub.publish(Sample(T, 7.4, "°C", now()))
    cleared = await within(5, client.next("alarm"))
    assert cleared["seq"] == 2 and cleared["alarm"]["state"] == "returned" and cleared["alarm"]["value"] == 7.4
    await close(client)


@pytest_twisted.ensureDeferred
async def test_an_operator_acknowledges_an_alarm_and_every_client_sees_it(server):
    server.service.set_alarm_limits(T, AlarmLimits(low=5.0))
    server.hub.publish(Sample(T, 4.0, "°C", now()))
    operator, snap1 = await open_client(server)
    viewer, snap2 = await open_client(server)
    assert [a["id"] for a in snap1["alarms"]] == [f"{T}:low"]
    operator.send_json({"type": "ack", "alarm": f"{T}:low"})
    assert await within(5, operator.next("acked")) == {"type": "acked", "alarm": f"{T}:low"}
    seen = await within(5, viewer.next("alarm"))
    assert seen["alarm"]["state"] == "acknowledged"
    operator.send_json({"type": "ack", "alarm": "nope:low"})
    assert (await within(5, operator.next("error")))["error"] == "unknown_alarm"
    await close(operator)
    await close(viewer)


@pytest_twisted.ensureDeferred
async def test_a_reconnecting_client_replays_exactly_the_alarm_transitions_it_missed(server):
    server.service.set_alarm_limits(T, AlarmLimits(high=8.0))
    server.hub.publish(Sample(T, 7.0, "°C", now()))
    client, snapshot = await open_client(server)
    version, epoch, seq = snapshot["version"], snapshot["epoch"], snapshot["alarm_seq"]
    await close(client)
    for value in (9.0, 7.0, 9.5):  # active, returned, active
        server.hub.publish(Sample(T, value, "°C", now()))
    client, first = await open_client(server, f"/ws?since={version}&epoch={epoch}&alarm_seq={seq}")
    assert first["type"] == "update" and first["points"][T]["value"] == 9.5
    replayed = [await within(5, client.next("alarm")) for _ in range(3)]
    assert [(m["seq"], m["alarm"]["state"]) for m in replayed] == [(1, "active"), (2, "returned"), (3, "active")]
    await close(client)


@pytest_twisted.ensureDeferred
async def test_history_answers_with_recent_samples_for_a_chart(server):
    start = now()
    for i in range(5):
        server.hub.publish(Sample(T, 7.0 + i / 10, "°C", start + i))
    client, _ = await open_client(server)
    client.send_json({"type": "history", "point": T, "since": start + 2})
    reply = await within(5, client.next("history"))
    assert reply == {"type": "history", "point": T, "samples": [[start + i, 7.0 + i / 10] for i in range(2, 5)]}
    client.send_json({"type": "history", "point": "plant/none/x", "since": 0})
    assert (await within(5, client.next("error")))["error"] == "unknown_point"
    await close(client)


@pytest_twisted.ensureDeferred
async def test_a_deadband_subscription_only_gets_meaningful_moves(server):
    server.hub.publish(Sample(T, 7.0, "°C", now()))
    client, _ = await open_client(server, "/ws?points=plant/none/x")
    client.send_json({"type": "subscribe", "points": [T], "deadband": 0.5})
    assert (await within(5, client.next("snapshot")))["points"][T]["value"] == 7.0
    [proto] = server.factory.clients
    for value in (7.1, 7.2, 7.3, 7.6, 7.7, 6.9):
        server.hub.publish(Sample(T, value, "°C", now()))
        # Each value is looked at on its own (not coalesced with the next): wait for the flush that covers it.
        version = server.hub.version
        await eventually(lambda: proto.last_version >= version)
    client.send_json({"type": "ping", "id": "end"})
    got = []
    while True:
        message = await within(5, client.next())
        if message["type"] == "pong":
            break
        got += [p["value"] for p in message["points"].values()]
    assert got == [7.6, 6.9]
    await close(client)
