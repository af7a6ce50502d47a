"""End to end over real sockets: shelve, unshelve, out of service and ack with comments and claims;
one source alarm when a producer crashes or its broker goes away."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from twisted.internet.threads import deferToThread

from hvac_push.core.points import AlarmLimits, Pattern, Sample
from hvac_push.sources.mqtt import MqttPoint, MqttProducer
from hvac_push.sources.mqtt_client import MqttBroker
from hvac_push.store.url import open_store
from hvac_push.testing import ScriptedProducer, connect
from hvac_push.transport.auth import AuthError, Authenticator, Permissions
from tests.brokers import Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, within
from tests.test_asyncapi import Schemas
from tests.test_metrics_health import http_get, samples

T = "plant/chiller-1/supply_temp"
HIGH = f"{T}:high"


def reactor():
    from twisted.internet import reactor

    return reactor


class Tokens:
    """Two operators: C{op} may acknowledge; C{sup} may also shelve and take points out of service."""

    def verify(self, token: str) -> Permissions:
        everything = (Pattern.parse("plant/#"),)
        if token == "op":
            return Permissions(everything, may_ack=True, subject="olga")
        if token == "sup":
            return Permissions(everything, may_ack=True, may_shelve=True, subject="sam")
        raise AuthError("invalid token")


async def client_with(server, token):
    client = await within(5, connect(reactor(), server.port, headers={"Authorization": f"Bearer {token}"}))
    await within(5, client.next("snapshot"))
    return client


SCHEMAS = Schemas()


async def next_alarm(client, alarm_id, state):
    """The next transition of C{alarm_id} to C{state}; every alarm message on the way must fit docs/asyncapi.yaml."""
    while True:
        message = SCHEMAS.check("alarm", await within(5, client.next("alarm")))
        if message["alarm"]["id"] == alarm_id and message["alarm"]["state"] == state:
            return message["alarm"]


async def answer(client, kinds=("shelved", "out_of_service", "acked", "error")):
    while True:
        message = await within(5, client.next())
        if message["type"] in kinds:
            return message


@pytest_twisted.ensureDeferred
async def test_shelve_unshelve_out_of_service_and_ack_need_their_claims_and_reach_everyone(tmp_path: Path) -> None:
    server = await start_server(authenticator=Authenticator([Tokens()]), store=open_store(f"sqlite:{tmp_path}/a.db"))
    op = sup = None
    try:
        server.service.set_alarm_limits(T, AlarmLimits(high=9.0))
        op = await client_with(server, "op")
        sup = await client_with(server, "sup")
        server.hub.publish(Sample(T, 9.5, "°C"))
        raised = await next_alarm(op, HIGH, "active")
        assert raised["priority"] == "high" and raised["ack_required"] is True

        # The ack claim alone does not shelve; the refusal changes nothing.
        op.send_json({"type": "shelve", "alarm": HIGH, "minutes": 30, "comment": "no"})
        assert (await answer(op))["error"] == "forbidden"
        # Strict members: a typo is refused, not ignored.
        sup.send_json({"type": "shelve", "alarm": HIGH, "minute": 30})
        assert (await answer(sup))["error"] == "unknown_field"  # as for every message type

        sup.send_json({"type": "shelve", "alarm": HIGH, "minutes": 30, "comment": "sensor swap"})
        reply = await answer(sup)
        assert reply["type"] == "shelved" and reply["alarm"] == HIGH
        assert reply["until"] == server.service.alarms.alarms[HIGH].shelved_until
        seen = await next_alarm(op, HIGH, "shelved")  # every client sees it, with who, why and until when
        assert (seen["by"], seen["comment"], seen["shelved_until"]) == ("sam", "sensor swap", reply["until"])

        sup.send_json({"type": "unshelve", "alarm": HIGH})
        assert (await answer(sup)) == {"type": "shelved", "alarm": HIGH, "until": None}
        await next_alarm(op, HIGH, "active")
        sup.send_json({"type": "unshelve", "alarm": HIGH})
        assert (await answer(sup))["error"] == "wrong_state"
        sup.send_json({"type": "shelve", "alarm": "plant/chiller-1/nothing:high", "minutes": 5})
        assert (await answer(sup))["error"] == "unknown_alarm"

        op.send_json({"type": "ack", "alarm": HIGH, "comment": "valve checked"})
        assert (await answer(op))["type"] == "acked"
        acked = await next_alarm(sup, HIGH, "acknowledged")
        assert (acked["by"], acked["comment"]) == ("olga", "valve checked")

        op.send_json({"type": "out_of_service", "point": T, "on": True})
        assert (await answer(op))["error"] == "forbidden"
        sup.send_json({"type": "out_of_service", "point": T, "on": True, "comment": "calibration"})
        assert (await answer(sup)) == {"type": "out_of_service", "point": T, "on": True}
        marker = await next_alarm(op, f"{T}:out_of_service", "out_of_service")
        assert (marker["by"], marker["comment"]) == ("sam", "calibration")
        await next_alarm(op, HIGH, "out_of_service")
        sup.send_json({"type": "out_of_service", "point": "plant/nothing/here", "on": True})
        assert (await answer(sup))["error"] == "unknown_point"

        # A new client's snapshot lists the point as out of service.
        late = await within(5, connect(reactor(), server.port, headers={"Authorization": "Bearer op"}))
        snapshot = await within(5, late.next("snapshot"))
        assert {a["id"]: a["state"] for a in snapshot["alarms"]}[f"{T}:out_of_service"] == "out_of_service"
        late.sendClose()
        await within(5, late.closed)

        # The journal has every step, shelve and out of service included, with who and why.
        store = server.service.store

        async def journal():
            return await store.read(lambda s: s.journal(0, 1e12, 100))

        wanted = [("active", None), ("shelved", "sensor swap"), ("active", None), ("acknowledged", "valve checked"),
                  ("out_of_service", None)]
        found: list = []

        async def complete():
            found[:] = [(e.state, e.comment) for e in await journal() if e.alarm == HIGH]
            return found == wanted

        for _ in range(100):
            if await complete():
                break
            from tests.helpers import sleep

            await sleep(0.05)
        assert found == wanted
    finally:
        for client in (op, sup):
            if client is not None:
                client.sendClose()
                await within(5, client.closed)
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_a_crashing_producer_raises_one_source_alarm_not_one_per_point():
    ids = [f"plant/boiler-1/p{i}" for i in range(12)]
    producer = ScriptedProducer([[Sample(i, 1.0, "") for i in ids]], crash_after=1, crashes=1, interval=0.3)
    server = await start_server()
    client = await within(5, connect(reactor(), server.port))
    await within(5, client.next("snapshot"))
    service = server.service.add_producer(producer)
    service.initial_backoff = 0.5
    try:
        alarm = await next_alarm(client, "plant/boiler-1/_source:source_down", "active")
        assert alarm["points"] == sorted(ids) and alarm["kind"] == "source_down"
        # /metrics counts one annunciation for the whole outage, and what it stood for.
        code, _, body = await http_get(server.port, "/metrics")
        metrics = samples(body)
        assert code == 200 and metrics[("hvacpush_alarm_rate_10m", ())] == 1.0
        assert metrics[("hvacpush_alarms_annunciated_total", (("priority", "high"),))] == 1.0
        assert metrics[("hvacpush_alarms_suppressed_total", ())] == len(ids)
        await next_alarm(client, "plant/boiler-1/_source:source_down", "returned")  # the restart publishes again
        assert not [a for a in server.service.alarms.alarms if a.endswith(":fault")]
        assert all(not seq_alarm.id.endswith(":fault") for _, seq_alarm in server.service.alarms.ring)
        client.sendClose()
        await within(5, client.closed)
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_a_broker_outage_raises_one_source_alarm(mosquitto):  # noqa: F811
    declared = [MqttPoint(f"plant/ahu-1/p{i}") for i in range(8)]
    producer = MqttProducer("mqtt.test", MqttBroker("127.0.0.1", mosquitto.port), points=declared, reconnect_min=0.05,
                            reconnect_max=0.2, keepalive=5, failover_grace=0.3)
    server = await start_server([producer])
    client = await within(5, connect(reactor(), server.port))
    try:
        await eventually(lambda: producer.connected, timeout=5)
        for point in declared:
            await deferToThread(mosquitto.publish, f"hvac/{point.point_id}", "1.5")
        await eventually(lambda: all(server.hub.get(p.point_id) is not None for p in declared), timeout=5)
        mosquitto.kill()
        alarm = await next_alarm(client, "plant/ahu-1/_source:source_down", "active")
        assert alarm["points"] == sorted(p.point_id for p in declared)
        assert not [a for a in server.service.alarms.alarms if a.endswith(":fault")]
        client.sendClose()
        await within(5, client.closed)
    finally:
        await stop_server(server)
