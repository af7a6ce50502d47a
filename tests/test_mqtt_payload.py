"""hvac_push.sources.mqtt_payload: JSON paths, value maps and unit suffixes, from the plant file to a WebSocket
client through a real mosquitto, with the messages Zigbee2MQTT, Tasmota and Shelly devices really send."""

from __future__ import annotations

import json
import textwrap
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from hvac_push.ops.plant_file import ConfigError, PlantConfig, parse_config
from hvac_push.ops.plant_sources import build_producer, producer_specs
from hvac_push.sources.mqtt import MqttPoint, MqttProducer
from hvac_push.sources.mqtt_client import MqttBroker
from hvac_push.sources.mqtt_payload import (
    PATH_MISSING, VALUE_UNMAPPED, BadMapping, PayloadMap, decode, make_value_map, number_with_unit, parse_path,
    parse_ts, read,
)
from hvac_push.testing import connect
from tests.brokers import Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, until_state, within
from tests.test_metrics_health import http_get, samples


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


# -- paths, maps, suffixes -----------------------------------------------------


@pytest.mark.parametrize(
    "path, steps",
    [
        ("temperature", ("temperature",)),
        ("ENERGY.Power", ("ENERGY", "Power")),
        ("switch:0.apower", ("switch:0", "apower")),
        ('params["switch:0"].aenergy.total', ("params", "switch:0", "aenergy", "total")),
        ("sensors[1].value", ("sensors", 1, "value")),
        ("['a.b']", ("a.b",)),
        ("DS18B20-1.Temperature", ("DS18B20-1", "Temperature")),
    ],
)
def test_paths_parse_into_keys_and_indexes(path, steps):
    assert parse_path(path) == steps


@pytest.mark.parametrize("path", ["", "a..b", "a.", ".a", "a[x]", "a b", "a[0", 'a["b]', "a" + ".b" * 20])
def test_bad_paths_are_refused_with_a_reason(path):
    with pytest.raises(ValueError):
        parse_path(path)


def test_a_mapping_picks_value_unit_and_time_out_of_one_object():
    doc = decode(b'{"Time": "2026-11-30T12:00:00", "ENERGY": {"Power": 230, "Unit": "W"}}')
    reading = read(PayloadMap("ENERGY.Power", "ENERGY.Unit", "Time"), doc)
    assert (reading.value, reading.unit, reading.ts) == (230, "W", 1796040000.0)
    assert parse_ts(1764000000250) == 1764000000.25 and parse_ts("2026-11-30T12:00:00Z") == 1796040000.0


def test_value_maps_turn_text_states_into_values_ignoring_case():
    on_off = PayloadMap(value_map=make_value_map({"ON": True, "OFF": False}))
    assert read(on_off, decode(b"ON")).value is True
    assert read(on_off, decode(b"off")).value is False
    modes = PayloadMap("mode", value_map=make_value_map({"0": "off", "1": "heat", "2": "cool"}))
    assert read(modes, decode(b'{"mode": 2}')).value == "cool"
    with pytest.raises(BadMapping) as e:
        read(on_off, decode(b"TOGGLE"))
    assert e.value.reason == VALUE_UNMAPPED and "'TOGGLE' is not in the value map" in str(e.value)
    with pytest.raises(ValueError, match="same key"):
        make_value_map({"ON": True, "on": False})


def test_numbers_with_a_unit_suffix_become_the_number_and_the_unit():
    assert number_with_unit("21.5 °C") == (21.5, "°C")
    assert number_with_unit("-3e2W") == (-300.0, "W")
    assert number_with_unit("7") == (7, "")
    assert number_with_unit("ON") is None and number_with_unit("3 phase 2") is None
    reading = read(PayloadMap("temp"), decode('{"temp": "21.5 °C"}'.encode()))
    assert (reading.value, reading.unit) == (21.5, "°C")


def test_the_plain_value_object_keeps_its_time_and_unit_under_a_value_map():
    on = PayloadMap(value_map=make_value_map({"ON": True}))
    reading = read(on, decode(b'{"value": "on", "ts": 1764000000, "unit": "x"}'))
    assert (reading.value, reading.ts, reading.unit) == (True, 1764000000.0, "x")


def test_an_empty_path_on_a_point_drops_the_source_default():
    source = PayloadMap(ts_path="Time")
    point = PayloadMap(ts_path="", value_map=make_value_map({"ON": True, "OFF": False})).merged(source)
    assert read(point, decode(b"ON")).value is True
    assert PayloadMap(ts_path="").plain
    with pytest.raises(BadMapping):
        read(PayloadMap(value_map=point.value_map).merged(source), decode(b"ON"))


def test_a_path_that_matches_nothing_says_where_it_stopped():
    with pytest.raises(BadMapping) as e:
        read(PayloadMap("ENERGY.Power"), decode(b'{"ENERGY": {"Total": 1}}'))
    assert e.value.reason == PATH_MISSING
    assert str(e.value) == "path 'ENERGY.Power' matches nothing: step 1 has no such key or index for 'Power'"
    with pytest.raises(BadMapping) as e:
        read(PayloadMap("temperature"), decode(b"21.5"))
    assert "the payload has not a JSON object" in str(e.value)


# -- the plant file --------------------------------------------------------------

FIELD = """
[mqtt.field]
host = "127.0.0.1"
port = PORT
topic_template = ""

[units.ahu-1]
source = "mqtt.field"

[units.ahu-1.points.room_temp]
topic = "zigbee2mqtt/ahu1_room"
json_path = "temperature"
unit = "°C"

[units.ahu-1.points.room_humidity]
topic = "zigbee2mqtt/ahu1_room"
json_path = "humidity"
unit = "%"

[units.ahu-1.points.sensor_battery]
topic = "zigbee2mqtt/ahu1_room"
json_path = "battery"
unit = "%"

[units.ahu-1.points.fan_relay]
topic = "zigbee2mqtt/ahu1_fan"
json_path = "state"
value_map = "on_off"

[units.ahu-1.points.fan_power]
topic = "tele/tasmota_5A1B/SENSOR"
json_path = "ENERGY.Power"
ts_path = "Time"
unit = "W"

[units.ahu-1.points.fan_energy]
topic = "tele/tasmota_5A1B/SENSOR"
json_path = "ENERGY.Total"
ts_path = "Time"
unit = "kWh"

[units.ahu-1.points.intake_temp]
topic = "tele/tasmota_5A1B/SENSOR"
json_path = "AM2301.Temperature"
ts_path = "Time"
unit = "°C"

[units.ahu-1.points.pump_power]
topic = "shellyplus1pm-a8032ab1/status/switch:0"
json_path = "apower"
unit = "W"

[units.ahu-1.points.pump_on]
topic = "shellyplus1pm-a8032ab1/status/switch:0"
json_path = "output"

[units.ahu-1.points.pump_relay_temp]
topic = "shellyplus1pm-a8032ab1/status/switch:0"
json_path = "temperature.tC"
unit = "°C"

[units.ahu-1.points.pump_energy]
topic = "shellyplus1pm-a8032ab1/events/rpc"
json_path = 'params["switch:0"].aenergy.total'
unit = "Wh"

[units.ahu-1.points.damper]
topic = "bms/ahu1/damper"
value_map = { open = true, closed = false }

[units.ahu-1.points.outdoor_temp]
topic = "bms/ahu1/outdoor"
"""


def plant(port: int = 18830, text: str = FIELD) -> PlantConfig:
    return parse_config(textwrap.dedent(text).replace("PORT", str(port)), "plant.toml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(textwrap.dedent(text), "plant.toml")
    return e.value.errors[0]


BROKER = '[mqtt.field]\nhost = "127.0.0.1"\n[units.ahu-1]\nsource = "mqtt.field"\n'


@pytest.mark.parametrize(
    "text, error",
    [
        (BROKER + '[units.ahu-1.points.t]\njson_path = "a..b"\n',
         "plant.toml: units.ahu-1.points.t.json_path: 'a..b': unexpected '.' at 3 "
         "(write keys with '.', indexes as [0], odd keys as [\"key\"])"),
        (BROKER + '[units.ahu-1.points.t]\nvalue_map = "on_of"\n',
         "plant.toml: units.ahu-1.points.t.value_map: unknown value map 'on_of': give a table or one of "
         "on_off, open_closed, yes_no"),
        (BROKER + '[units.ahu-1.points.t]\nvalue_map = { ON = [1] }\n',
         "plant.toml: units.ahu-1.points.t.value_map.ON: expected a number, true/false or a text of at most "
         "256 characters"),
        (BROKER + '[units.ahu-1.points.t]\nvalue_map = { ON = true, on = false }\n',
         "plant.toml: units.ahu-1.points.t.value_map: 'ON' and 'on' are the same key (keys compare ignoring case)"),
        (BROKER + '[units.ahu-1.points.t]\nvalue_map = 3\n',
         "plant.toml: units.ahu-1.points.t.value_map: expected a table like { ON = true, OFF = false } or one of "
         "on_off, open_closed, yes_no"),
        (BROKER.replace('"127.0.0.1"\n', '"127.0.0.1"\nts_path = "Time["\n', 1),
         "plant.toml: mqtt.field.ts_path: 'Time[': unexpected '[' at 5 "
         "(write keys with '.', indexes as [0], odd keys as [\"key\"])"),
        (BROKER + '[units.ahu-1.points.a]\ntopic = "x"\njson_path = "t"\n'
         '[units.ahu-1.points.b]\ntopic = "x"\njson_path = "t"\n',
         "plant.toml: units.ahu-1.points.b.topic: topic 'x' is also used at units.ahu-1.points.a with the same json_path"),
        (BROKER + '[modbus.plc]\nhost = "h"\n[units.ahu-1.points.m]\nsource = "modbus.plc"\nregister = 1\n'
         'json_path = "a"\n',
         "plant.toml: units.ahu-1.points.m.json_path: only for MQTT points (this one's source is modbus.plc)"),
    ],
)
def test_bad_mappings_in_the_plant_file_are_one_line_naming_the_key(text, error):
    assert error_of(text) == error


def test_the_plant_file_gives_each_point_its_mapping_and_the_source_its_defaults():
    config = plant(text=FIELD.replace('topic_template = ""', 'topic_template = ""\nts_path = "ts"'))
    by_id = {p.point_id: p for p in config.points}
    assert by_id["plant/ahu-1/fan_power"].payload == PayloadMap("ENERGY.Power", None, "Time")
    assert by_id["plant/ahu-1/fan_relay"].payload == PayloadMap("state", value_map=(("on", True), ("off", False)))
    assert by_id["plant/ahu-1/outdoor_temp"].payload is None
    assert config.brokers[0].payload == PayloadMap(ts_path="ts")
    producer = build_producer(producer_specs(config)["mqtt.field"])
    assert isinstance(producer, MqttProducer)
    routes = producer.topics.routes("zigbee2mqtt/ahu1_room")
    assert [(r.point_id, r.payload.json_path, r.payload.ts_path) for r in routes] == [
        ("plant/ahu-1/room_temp", "temperature", "ts"),
        ("plant/ahu-1/room_humidity", "humidity", "ts"),
        ("plant/ahu-1/sensor_battery", "battery", "ts"),
    ]
    assert producer.topics.routes("tele/tasmota_5A1B/SENSOR")[0].payload.ts_path == "Time"  # the point's own wins


def example_block(name: str) -> str:
    """The commented block between C{# BEGIN name} and C{# END name} of docs/plant.example.toml, un-commented."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "plant.example.toml").read_text(encoding="utf-8")
    block = text.split(f"# BEGIN {name}\n", 1)[1].split(f"# END {name}\n", 1)[0]
    return "".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in block.splitlines(True))


def test_the_example_field_devices_block_loads():
    config = parse_config(example_block("mqtt-field"), "plant.example.toml")
    by_id = {p.point_id: p for p in config.points}
    assert by_id["plant/ahu-2/room_humidity"].payload == PayloadMap("humidity")
    assert by_id["plant/ahu-2/mode"].payload == PayloadMap(value_map=(("0", "off"), ("1", "heat"), ("2", "cool")))
    assert len(by_id) == 7


def test_a_reload_restarts_an_mqtt_source_only_when_its_mappings_change():
    before = producer_specs(plant())
    same = producer_specs(plant(text=FIELD + "\n"))
    assert same == before
    changed = producer_specs(plant(text=FIELD.replace('json_path = "humidity"', 'json_path = "humidity_pct"')))
    assert changed["mqtt.field"] != before["mqtt.field"]
    damper = "[units.ahu-1.points.damper]"
    renamed = producer_specs(plant(text=FIELD.replace(damper, damper + '\nname = "D"')))
    assert renamed == before  # a display name is not the source's business


# -- end to end: mosquitto -> MqttProducer -> hub -> WebSocket client ----------------


async def _publish(broker: Mosquitto, topic: str, payload: str | bytes) -> None:
    await deferToThread(broker.publish, topic, payload)


def _values(expected: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    def check(state: dict[str, Any]) -> bool:
        return all(
            k in state and state[k]["status"] == "ok" and state[k]["value"] == v for k, v in expected.items()
        )

    return check


def _field_producer(broker: Mosquitto) -> MqttProducer:
    producer = build_producer(producer_specs(plant(broker.port))["mqtt.field"])
    assert isinstance(producer, MqttProducer)
    producer.reconnect_min, producer.reconnect_max, producer.keepalive = 0.05, 0.2, 5
    return producer


ZIGBEE = {"temperature": 21.5, "humidity": 48.2, "battery": 97, "linkquality": 120, "voltage": 3000}
TASMOTA = {
    "Time": "2026-11-30T12:00:00",
    "ENERGY": {"TotalStartTime": "2026-01-01T00:00:00", "Total": 12.345, "Yesterday": 1.2, "Today": 0.8,
               "Power": 230, "ApparentPower": 240, "ReactivePower": 30, "Factor": 0.96, "Voltage": 231,
               "Current": 1.04},
    "AM2301": {"Temperature": 18.4, "Humidity": 55.1, "DewPoint": 9.3},
    "TempUnit": "C",
}
SHELLY_STATUS = {
    "id": 0, "source": "timer", "output": True, "apower": 12.5, "voltage": 230.1, "freq": 50.0, "current": 0.06,
    "pf": 0.9, "aenergy": {"total": 1234.567, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1764000000},
    "temperature": {"tC": 45.2, "tF": 113.4},
}
SHELLY_EVENT = {
    "src": "shellyplus1pm-a8032ab1", "dst": "shellyplus1pm-a8032ab1/events", "method": "NotifyStatus",
    "params": {"ts": 1764000000.42, "switch:0": {"id": 0, "aenergy": {"total": 1240.5, "minute_ts": 1764000000}}},
}


@pytest_twisted.ensureDeferred
async def test_zigbee2mqtt_tasmota_and_shelly_messages_each_feed_several_points(mosquitto):
    producer = _field_producer(mosquitto)
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        await eventually(lambda: producer.connected, timeout=5)
        await _publish(mosquitto, "zigbee2mqtt/ahu1_room", json.dumps(ZIGBEE))
        await _publish(mosquitto, "tele/tasmota_5A1B/SENSOR", json.dumps(TASMOTA))
        await _publish(mosquitto, "shellyplus1pm-a8032ab1/status/switch:0", json.dumps(SHELLY_STATUS))
        await _publish(mosquitto, "shellyplus1pm-a8032ab1/events/rpc", json.dumps(SHELLY_EVENT))
        await _publish(mosquitto, "bms/ahu1/outdoor", "4.5 °C")
        state = await until_state(client, _values({
            "plant/ahu-1/room_temp": 21.5, "plant/ahu-1/room_humidity": 48.2, "plant/ahu-1/sensor_battery": 97,
            "plant/ahu-1/fan_power": 230, "plant/ahu-1/fan_energy": 12.345, "plant/ahu-1/intake_temp": 18.4,
            "plant/ahu-1/pump_power": 12.5, "plant/ahu-1/pump_on": True, "plant/ahu-1/pump_relay_temp": 45.2,
            "plant/ahu-1/pump_energy": 1240.5, "plant/ahu-1/outdoor_temp": 4.5,
        }))
        assert state["plant/ahu-1/fan_power"]["ts"] == 1796040000.0  # Tasmota's "Time", taken as UTC
        assert state["plant/ahu-1/room_humidity"]["unit"] == "%"
        assert state["plant/ahu-1/outdoor_temp"]["unit"] == "°C"  # from the suffix
        assert producer.unread == {} and producer.malformed == 0
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_on_off_and_open_closed_text_states_map_to_bools(mosquitto):
    producer = _field_producer(mosquitto)
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        await eventually(lambda: producer.connected, timeout=5)
        await _publish(mosquitto, "zigbee2mqtt/ahu1_fan", '{"state": "ON", "linkquality": 90}')
        await _publish(mosquitto, "bms/ahu1/damper", "closed")
        await until_state(client, _values({"plant/ahu-1/fan_relay": True, "plant/ahu-1/damper": False}))
        await _publish(mosquitto, "zigbee2mqtt/ahu1_fan", '{"state": "OFF", "linkquality": 90}')
        await _publish(mosquitto, "bms/ahu1/damper", "open")
        await until_state(client, _values({"plant/ahu-1/fan_relay": False, "plant/ahu-1/damper": True}))
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_bad_mappings_are_counted_by_reason_in_metrics_and_the_source_keeps_going(mosquitto):
    producer = _field_producer(mosquitto)
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        await eventually(lambda: producer.connected, timeout=5)
        # Humidity and battery are missing: two parts of one message fail, the temperature still gets through.
        await _publish(mosquitto, "zigbee2mqtt/ahu1_room", '{"temperature": 20.0}')
        await _publish(mosquitto, "zigbee2mqtt/ahu1_fan", '{"state": "TOGGLE"}')
        await _publish(mosquitto, "bms/ahu1/damper", "ajar")
        await _publish(mosquitto, "bms/ahu1/outdoor", "{not json")
        await until_state(client, _values({"plant/ahu-1/room_temp": 20.0}))
        await eventually(lambda: sum(producer.unread.values()) == 4 and producer.malformed == 1, timeout=5)
        assert producer.unread == {"path_missing": 2, "value_unmapped": 2}
        await _publish(mosquitto, "bms/ahu1/damper", "open")
        state = await until_state(client, _values({"plant/ahu-1/damper": True}))
        assert "plant/ahu-1/room_humidity" not in state and "plant/ahu-1/fan_relay" not in state
        assert running.service.producers[0].status.restarts == 0

        code, _, body = await http_get(running.port, "/metrics")
        assert code == 200
        found = samples(body)

        def errors(reason: str) -> float:
            return found[("hvacpush_source_errors_total", (("producer", "mqtt.field"), ("reason", reason)))]

        assert (errors("path_missing"), errors("value_unmapped"), errors("malformed")) == (2, 2, 1)
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


def test_a_bad_mapping_is_logged_at_most_once_a_minute_per_topic():
    from tests.logwatch import watch_log

    with watch_log() as seen:
        producer = MqttProducer(
            "mqtt.t", MqttBroker("127.0.0.1"), points=[MqttPoint("p/u/a", "x", payload=PayloadMap("a"))],
            topic_template="",
        )
        for _ in range(5):
            producer.count_unread("x", PATH_MISSING, "p/u/a: path 'a' matches nothing")
        producer.count_unread("y", PATH_MISSING, "another topic")
    lines = [e for e in seen.events if "could not read a point" in e.get("log_format", "")]
    assert [e["topic"] for e in lines] == ["x", "y"]
    assert producer.unread == {PATH_MISSING: 6}
