"""What the server shows is true on a real plant, over real sockets (issue 13).

Large answers arrive whole; configured points that never reported are shown,
with a status that says why; health tells which source reaches its device;
nothing follows a close frame.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest_twisted
from twisted.internet.task import LoopingCall

from hvac_push.core.points import AlarmLimits, Sample
from hvac_push.ops.plant_file import parse_config
from hvac_push.ops.plant_sources import ConfigReloader
from hvac_push.sources.modbus import ModbusPoint, encode
from hvac_push.sources.simulator import SimulatorProducer
from hvac_push.testing import connect
from hvac_push.transport.auth import Authenticator, JWTVerifier
from hvac_push.transport.limits import Limits
from tests.brokers import modbus_server, mosquitto  # noqa: F401 (fixtures)
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, sleep, until_state, within
from tests.logwatch import watch_log
from tests.nbsock import CLOSE, PING, TEXT, RawSocket, close_code, frame
from tests.test_metrics_health import http_get, samples
from tests.wsprobe import closed_port  # noqa: F401 (fixture)


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def closed(client: Any) -> None:
    client.sendClose()
    await within(5, client.closed)


def no_payload_complaints(log: Any) -> None:
    assert not log.failures(), log.failures()[:2]
    assert "payload limit" not in log.text()


# -- large answers arrive whole -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_opening_snapshot_of_a_500_unit_plant_arrives_whole():
    producer = SimulatorProducer(units=500, rate=50.0, seed=1)
    running = await start_server([producer])
    try:
        with watch_log() as log:
            expected = len(producer.model.point_ids())
            await eventually(lambda: len(running.hub) == expected, timeout=20)
            started = time.perf_counter()
            client = await within(10, connect(reactor(), running.port))
            snapshot = await within(10, client.next("snapshot"))
            took = time.perf_counter() - started
            assert len(snapshot["points"]) == expected
            assert snapshot["alarm_seq"] >= 0 and isinstance(snapshot["alarms"], list)
            size = len(json.dumps(snapshot, ensure_ascii=False).encode())
            assert size > 64 * 1024
            print(f"\n500-unit snapshot: {len(snapshot['points'])} points, ~{size} bytes, "
                  f"connect to parsed in {took * 1000:.0f} ms")
            await closed(client)
        no_payload_complaints(log)
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_subscribe_resume_and_alarm_answers_over_the_size_limit_arrive_whole():
    """An alarm flood: every answer a client can get is larger than the 64 KiB it may send."""
    running = await start_server(limits=Limits(max_message_size=4096))
    hub = running.hub
    try:
        with watch_log() as log:
            ids = [f"plant/unit-{i}/supply_temp" for i in range(1500)]
            for point_id in ids:
                running.service.set_alarm_limits(point_id, AlarmLimits(high=25.0))
            hub.publish_many([Sample(point_id, 30.0, "°C", time.time()) for point_id in ids])
            assert len(running.service.alarms.alarms) == 1500
            r = reactor()

            # The opening snapshot, with every alarm.
            client = await within(5, connect(r, running.port))
            snapshot = await within(5, client.next("snapshot"))
            assert len(snapshot["points"]) == 1500 and len(snapshot["alarms"]) == 1500
            assert snapshot["alarm_seq"] == running.service.alarms.seq

            # The answer to a subscribe that widens a narrow subscription.
            narrow = await within(5, connect(r, running.port, "/ws?points=plant/unit-0/%23"))
            assert len((await within(5, narrow.next("snapshot")))["points"]) == 1
            narrow.send_json({"type": "subscribe", "points": ["#"]})
            added = await within(5, narrow.next("snapshot"))
            assert len(added["points"]) == 1499

            # A resume: every point in one update, then the alarm list (no alarm_seq given).
            resumed = await within(5, connect(r, running.port, f"/ws?since=0&epoch={hub.epoch}"))
            update = await within(5, resumed.next())
            assert update["type"] == "update" and len(update["points"]) == 1500
            alarms = await within(5, resumed.next())
            assert alarms["type"] == "alarms" and alarms["resync"] is True and len(alarms["alarms"]) == 1500

            # A client with a change-of-value filter gets its own (large) update frames.
            filtered = await within(5, connect(r, running.port))
            await within(5, filtered.next("snapshot"))
            filtered.send_json({"type": "subscribe", "points": ["#"], "deadband": 0.5})
            assert (await within(5, filtered.next("snapshot")))["points"] == {}
            hub.publish_many([Sample(point_id, 31.0, "°C", time.time()) for point_id in ids])
            changed = await within(5, filtered.next("update"))
            assert len(changed["points"]) == 1500
            assert (await within(5, client.next("update")))["version"] == hub.version  # the shared frame too
            for c in (client, narrow, resumed, filtered):
                await closed(c)
        no_payload_complaints(log)
    finally:
        await stop_server(running)


# -- configured points that never reported ----------------------------------------------


def modbus_plant(port: int) -> str:
    return f"""
[modbus.plc]
host = "127.0.0.1"
port = {port}
poll_interval = 0.1
timeout = 0.5

[units.chiller-1]
source = "modbus.plc"

[units.chiller-1.points.supply_temp]
unit = "°C"
register = 100
type = "float32"

[units.chiller-1.points.fan_speed]
unit = "%"
register = 7

[units.chiller-1.points.missing]
register = 199
type = "uint32"

[units.chiller-1.points.compressor]
register = 3
table = "coil"
"""


IDS = [f"plant/chiller-1/{name}" for name in ("supply_temp", "fan_speed", "missing", "compressor")]


async def health(port: int) -> tuple[int, dict[str, Any]]:
    code, _, body = await http_get(port, "/healthz")
    return code, json.loads(body)


@pytest_twisted.ensureDeferred
async def test_a_dead_modbus_device_shows_its_points_down_and_health_says_why(closed_port):
    port = closed_port  # nothing listens here
    running = await start_server()
    try:
        with watch_log() as log:
            ConfigReloader(running.service, parse_config(modbus_plant(port)))
            client = await within(5, connect(reactor(), running.port))
            snapshot = await within(5, client.next("snapshot"))
            assert sorted(snapshot["points"]) == sorted(IDS)
            for point in snapshot["points"].values():
                assert point["value"] is None and point["status"] in ("waiting", "down")
            assert snapshot["points"]["plant/chiller-1/supply_temp"]["unit"] == "°C"
            # The first poll fails at once: the alarm may be in the snapshot already, or follow it. Four
            # points of one unit down together are a flood: one source alarm stands for them (docs/alarms.md).
            source_alarm = "plant/chiller-1/_source:source_down"
            alarms = {a["id"]: a for a in snapshot["alarms"]}
            while source_alarm not in alarms:
                alarm = (await within(5, client.next("alarm")))["alarm"]
                alarms[alarm["id"]] = alarm
            assert alarms[source_alarm]["points"] == sorted(IDS) and alarms[source_alarm]["state"] == "active"
            assert not [a for a in alarms.values() if a["kind"] == "down" and a["state"] == "active"]
            later = await within(5, connect(reactor(), running.port))
            state = (await within(5, later.next("snapshot")))["points"]
            assert all(state[i]["status"] == "down" and state[i]["value"] is None for i in IDS)
            await closed(later)

            code, doc = await health(running.port)
            assert code == 200 and doc["ready"] is True  # readiness keeps its meaning
            source = doc["producers"]["modbus.plc"]
            assert source["state"] == "running" and source["connected"] is False
            assert f"127.0.0.1:{port}" in source["last_error"] and source["last_sample"] is None
            assert source["errors"]["unreachable"] >= 1
            assert doc["points"] == 4 and doc["points_by_status"]["down"] == 4

            _, _, body = await http_get(running.port, "/metrics")
            found = samples(body)
            assert found[("hvacpush_points", (("status", "down"),))] == 4
            assert found[("hvacpush_producer_connected", (("producer", "modbus.plc"),))] == 0
            assert found[("hvacpush_source_errors_total", (("producer", "modbus.plc"), ("reason", "unreachable")))] >= 1
            await closed(client)
        assert not log.failures()
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_an_exception_register_and_a_nan_float_are_faults_counted_by_reason(modbus_server):
    modbus_server.set("holding", 100, [0x7FC0, 0x0000])  # a float32 NaN
    modbus_server.set("holding", 7, [55])
    modbus_server.set("coil", 3, [True])
    running = await start_server()
    try:
        with watch_log() as log:
            ConfigReloader(running.service, parse_config(modbus_plant(modbus_server.port)))
            client = await within(5, connect(reactor(), running.port))
            state = await until_state(client, lambda s: len(s) == 4 and all(p["status"] != "waiting" for p in s.values()))
            assert state["plant/chiller-1/fan_speed"]["value"] == 55 and state["plant/chiller-1/fan_speed"]["status"] == "ok"
            assert state["plant/chiller-1/compressor"]["value"] is True
            for bad in ("plant/chiller-1/supply_temp", "plant/chiller-1/missing"):
                assert state[bad]["status"] == "fault" and state[bad]["value"] is None

            code, doc = await health(running.port)
            source = doc["producers"]["modbus.plc"]
            assert code == 200 and source["connected"] is True and source["last_sample"] > time.time() - 60
            await eventually(lambda: running.service.producers[0].status.errors().get("decode", 0) >= 2)

            _, _, body = await http_get(running.port, "/metrics")
            found = samples(body)
            assert found[("hvacpush_points", (("status", "fault"),))] == 2
            assert found[("hvacpush_points", (("status", "ok"),))] == 2
            assert found[("hvacpush_producer_connected", (("producer", "modbus.plc"),))] == 1
            errors = {dict(labels)["reason"]: v for (name, labels), v in found.items()
                      if name == "hvacpush_source_errors_total"}
            assert errors["illegal_address"] >= 1 and errors["decode"] >= 2

            # A good reading later brings the point to ok with its first value.
            modbus_server.set("holding", 100, encode(ModbusPoint("x/y/z", 100, type="float32"), 6.5))
            supply = "plant/chiller-1/supply_temp"
            await until_state(client, lambda s: s.get(supply, {}).get("value") == 6.5 and s[supply]["status"] == "ok")
            await closed(client)
        assert not log.failures()
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_an_mqtt_source_reports_its_broker_and_counts_malformed_messages(mosquitto):
    from twisted.internet.threads import deferToThread

    from hvac_push.sources.mqtt import MqttProducer
    from hvac_push.sources.mqtt_client import MqttBroker

    producer = MqttProducer("mqtt.main", MqttBroker("127.0.0.1", mosquitto.port), reconnect_min=0.05, reconnect_max=0.2)
    running = await start_server([producer])
    try:
        status = running.service.producers[0].status
        await eventually(lambda: status.connected, timeout=5)
        for payload in ("warm", "{broken"):
            await deferToThread(mosquitto.publish, "hvac/plant/crac-1/supply_temp", payload)
        await deferToThread(mosquitto.publish, "hvac/plant/crac-1/supply_temp", "18.5")
        await eventually(lambda: running.hub.get("plant/crac-1/supply_temp") is not None)
        _, doc = await health(running.port)
        source = doc["producers"]["mqtt.main"]
        assert source["connected"] is True and source["last_error"] is None and source["last_sample"] is not None
        _, _, body = await http_get(running.port, "/metrics")
        found = samples(body)
        assert found[("hvacpush_source_errors_total", (("producer", "mqtt.main"), ("reason", "malformed")))] == 2
        assert found[("hvacpush_producer_connected", (("producer", "mqtt.main"),))] == 1

        mosquitto.kill()
        await eventually(lambda: not status.connected, timeout=10)
        _, doc = await health(running.port)
        assert doc["producers"]["mqtt.main"]["last_error"]
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_sources_that_do_not_report_connections_are_judged_by_their_samples():
    from hvac_push.testing import ScriptedProducer

    silent = ScriptedProducer([], name="silent")
    crashing = ScriptedProducer([[Sample("plant/u/p", 1.0)]], crash_after=1, name="crashing",
                                heartbeat=lambda i: [Sample("plant/u/p", float(i))])
    running = await start_server([silent, crashing])
    try:
        services = {p.producer.name: p for p in running.service.producers}
        await eventually(lambda: services["crashing"].status.restarts == 1 and services["crashing"].status.connected,
                         timeout=10)
        code, doc = await health(running.port)
        crashed, quiet = doc["producers"]["crashing"], doc["producers"]["silent"]
        assert code == 200
        # Back after its crash: connected again, the crash still on record.
        assert crashed["state"] == "running" and crashed["last_error"] == "scripted crash in run 1"
        assert crashed["last_error_at"] is not None and crashed["last_sample"] is not None
        # Running, but it has never delivered anything: it does not claim a connection.
        assert quiet["state"] == "running" and quiet["connected"] is False and quiet["last_sample"] is None
    finally:
        await stop_server(running)


# -- nothing after a close frame ----------------------------------------------------------


def start_ticker(running: Any) -> LoopingCall:
    """A point that changes every 10 ms, so there is always an update to (wrongly) send."""
    counter = iter(range(10**9))
    ticker = LoopingCall(lambda: running.hub.publish(Sample("plant/probe/counter", next(counter), ts=time.time())))
    ticker.clock = reactor()
    ticker.start(0.01)
    return ticker


async def frames_until_eof(raw: RawSocket, timeout: float = 15.0) -> list[tuple[int, bytes]]:
    """Every frame until the server ends the TCP connection; the close frame is not answered."""
    frames: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout
    while True:
        while raw._frame_ready():
            parsed = raw._parse(consume=True)
            assert parsed is not None
            frames.append(parsed)
        if raw.eof:
            return frames
        if not raw._pull():
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not end the connection")
            await sleep(0.005)


def after_close(frames: list[tuple[int, bytes]], code: int) -> list[int]:
    """The opcodes of data frames after the close frame, which must carry C{code}."""
    opcodes = [opcode for opcode, _ in frames]
    assert CLOSE in opcodes, opcodes[-5:]
    at = opcodes.index(CLOSE)
    assert close_code(frames[at][1]) == code
    assert TEXT in opcodes[:at]  # updates were flowing before it
    return [op for op in opcodes[at + 1 :] if op in (0x0, 0x1, 0x2)]


GRACE = {"closeHandshakeTimeout": 1.0}


@pytest_twisted.ensureDeferred
async def test_no_data_frame_follows_a_1008_close():
    running = await start_server(limits=Limits(client_rate=5, client_burst=5), ws_options=GRACE)
    ticker = start_ticker(running)
    try:
        with watch_log() as log:
            raw = RawSocket(running.port)
            assert await raw.upgrade() == 101
            await raw.send(b"".join(frame(PING, b"flood") for _ in range(30)))
            frames = await frames_until_eof(raw)
            assert after_close(frames, 1008) == []
            assert running.factory.guard.stats.policy_closes == 1
            raw.close()
        assert not log.failures()
    finally:
        ticker.stop()
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_no_data_frame_follows_a_4001_close():
    secret = b"k" * 48
    authenticator = Authenticator([JWTVerifier(secret, "HS256")])
    running = await start_server(authenticator=authenticator, ws_options=GRACE)
    ticker = start_ticker(running)
    try:
        with watch_log() as log:
            token = jwt.encode({"points": ["#"], "exp": int(time.time()) + 2}, secret, algorithm="HS256")
            raw = RawSocket(running.port)
            assert await raw.upgrade(headers={"Authorization": f"Bearer {token}"}) == 101
            frames = await frames_until_eof(raw)
            assert after_close(frames, 4001) == []
            assert running.factory.guard.stats.expired_closes == 1
            raw.close()
        assert not log.failures()
    finally:
        ticker.stop()
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_no_data_frame_follows_a_1013_close():
    running = await start_server(limits=Limits(slow_client_timeout=0.5), ws_options=GRACE)
    hub = running.hub
    # Big updates, so a reader that stops is paused within a few of them.
    hub.publish_many([Sample(f"plant/u{i}/p", 0, ts=1.0) for i in range(300)])
    round_ = iter(range(1, 10**9))

    def churn() -> None:
        n = next(round_)
        hub.publish_many([Sample(f"plant/u{i}/p", n, ts=float(n)) for i in range(300)])

    ticker = LoopingCall(churn)
    ticker.clock = reactor()
    ticker.start(0.05)
    try:
        with watch_log() as log:
            raw = RawSocket(running.port, rcvbuf=8 * 1024)
            assert await raw.upgrade() == 101
            # Stop reading until the server gives up on this client ...
            await eventually(lambda: running.factory.guard.stats.slow_closes == 1, timeout=10)
            # ... then read everything it sent.
            frames = await frames_until_eof(raw)
            assert after_close(frames, 1013) == []
            raw.close()
        assert not log.failures()
    finally:
        ticker.stop()
        await stop_server(running)
