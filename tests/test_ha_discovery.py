"""hvac_push.sources.ha_discovery: Home Assistant MQTT discovery messages create points, end to end through a
real mosquitto to a WebSocket client, with the config messages Zigbee2MQTT and Tasmota publish."""

from __future__ import annotations

import json
import textwrap
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from hvac_push.ops.plant_file import ConfigError, parse_config
from hvac_push.ops.plant_sources import build_producer, producer_specs
from hvac_push.sources.ha_discovery import BadDiscovery, HaDiscovery, parse_entity, slug, template_path
from hvac_push.sources.mqtt import MqttProducer
from hvac_push.sources.mqtt_payload import PayloadMap
from hvac_push.testing import connect
from tests.brokers import Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, until_state, within


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.mark.parametrize(
    "template, path",
    [
        ("{{ value_json.temperature }}", "temperature"),
        ("{{value_json.ENERGY.Power}}", "ENERGY.Power"),
        ("{{ value_json['switch:0'].apower | float }}", '["switch:0"].apower'),
        ("{{ value_json.sensors[1].value | round(1) }}", "sensors[1].value"),
        ("{{ value }}", None),
        ("{{ value | int }}", None),
    ],
)
def test_the_supported_value_templates_become_json_paths(template, path):
    assert template_path(template) == path


@pytest.mark.parametrize(
    "template",
    ["{{ value_json.a if value_json.b else 0 }}", "{% if value %}1{% endif %}", "{{ value_json.t * 2 }}",
     "{{ states('sensor.x') }}", "{{ value_json.__class__ }}x"],
)
def test_other_templates_are_refused_never_evaluated(template):
    with pytest.raises(BadDiscovery, match="not in the supported subset"):
        template_path(template)


HA = HaDiscovery()

ZIGBEE_TEMP = {  # abbreviated keys and a "~" base topic, as many devices send them
    "~": "zigbee2mqtt/ahu1_room", "name": "Temperature", "uniq_id": "0x00158d0001_temperature",
    "stat_t": "~", "unit_of_meas": "°C", "dev_cla": "temperature", "val_tpl": "{{ value_json.temperature }}",
    "dev": {"ids": ["zigbee2mqtt_0x00158d0001"], "name": "AHU1 room"},
    "avty": [{"topic": "zigbee2mqtt/bridge/state", "value_template": "{{ value_json.state }}"}],
}
ZIGBEE_CONTACT = {
    "name": "Door", "state_topic": "zigbee2mqtt/ahu1_door", "value_template": "{{ value_json.contact }}",
    "payload_on": False, "payload_off": True, "device": {"name": "AHU1 door"},
}
TASMOTA_POWER = {
    "name": "Tasmota ENERGY Power", "stat_t": "tele/tasmota_5A1B/SENSOR", "unit_of_meas": "W",
    "val_tpl": "{{value_json['ENERGY']['Power']}}", "avty_t": "tele/tasmota_5A1B/LWT",
    "pl_avail": "Online", "pl_not_avail": "Offline", "dev": {"name": "Tasmota AHU1 fan"},
}
TASMOTA_RELAY = {
    "name": "Fan relay", "stat_t": "stat/tasmota_5A1B/POWER", "pl_on": "ON", "pl_off": "OFF",
    "avty_t": "tele/tasmota_5A1B/LWT", "pl_avail": "Online", "pl_not_avail": "Offline",
}


def test_a_zigbee2mqtt_config_with_abbreviations_and_a_base_topic_becomes_a_point():
    entity = parse_entity(HA, "homeassistant/sensor/0x00158d0001/temperature/config", json.dumps(ZIGBEE_TEMP).encode())
    assert entity is not None
    assert (entity.point_id, entity.topic, entity.unit) == ("plant/0x00158d0001/temperature", "zigbee2mqtt/ahu1_room", "°C")
    assert entity.payload == PayloadMap("temperature")
    assert entity.name == "AHU1 room Temperature"
    assert entity.availability == ("zigbee2mqtt/bridge/state", "online", "offline")


def test_a_binary_sensor_maps_its_payload_on_and_off_to_bools():
    entity = parse_entity(HA, "homeassistant/binary_sensor/ahu1_door/contact/config",
                          json.dumps(ZIGBEE_CONTACT).encode())
    assert entity is not None and entity.payload == PayloadMap("contact", value_map=(("false", True), ("true", False)))
    assert parse_entity(HA, "homeassistant/binary_sensor/ahu1_door/contact/config", b"") is None  # removed


@pytest.mark.parametrize(
    "config, why",
    [
        (b"not json", "config is not a JSON object"),
        (b'{"name": "x"}', "sensor has no exact state_topic"),
        (b'{"stat_t": "a/+/b"}', "sensor has no exact state_topic"),
        (b'{"stat_t": "a", "val_tpl": "{{ value_json.a + 1 }}"}', "not in the supported subset"),
        (b'{"stat_t": "a", "unit_of_meas": "' + b"x" * 40 + b'"}', "'unit_of_measurement' must be a text of at most 32"),
    ],
)
def test_bad_discovery_messages_say_why(config, why):
    with pytest.raises(BadDiscovery, match=why.replace("+", r"\+")):
        parse_entity(HA, "homeassistant/sensor/n/o/config", config)


def test_names_that_are_not_point_id_levels_are_made_into_one():
    assert slug("AHU 1 / room") == "AHU_1_room" and slug("...") == "_" and len(slug("x" * 100)) == 64


def test_the_plant_file_turns_discovery_on_per_broker_with_one_line_errors():
    base = '[mqtt.ha]\nhost = "127.0.0.1"\ntopic_template = ""\n'
    config = parse_config(base + '[mqtt.ha.homeassistant]\nsite = "bldg-a"\n', "plant.toml")
    assert config.brokers[0].homeassistant == HaDiscovery("homeassistant", "bldg-a")
    assert "mqtt.ha" in producer_specs(config)
    sites = '[sites.bldg-b]\n'
    assert parse_config(sites + base + "[mqtt.ha.homeassistant]\n", "p").brokers[0].homeassistant == HaDiscovery(
        "homeassistant", "bldg-b")  # the only site, as for units
    with pytest.raises(ConfigError) as e:
        parse_config(sites + "[sites.bldg-c]\n" + base + "[mqtt.ha.homeassistant]\n", "plant.toml")
    assert e.value.errors[0] == "plant.toml: mqtt.ha.homeassistant.site: required when more than one site is declared"
    for table, error in [
        ('prefix = "ha/+"', "plant.toml: mqtt.ha.homeassistant.prefix: must be an exact topic, without '+' or '#'"),
        ('site = "a b"', "plant.toml: mqtt.ha.homeassistant.site: bad name: use letters, digits, '_', '.' or '-' "
                         "(at most 64, not starting with '.' or '-')"),
        ("prefx = 1", "plant.toml: mqtt.ha.homeassistant.prefx: unknown key (did you mean 'prefix'?)"),
    ]:
        with pytest.raises(ConfigError) as e:
            parse_config(base + "[mqtt.ha.homeassistant]\n" + table + "\n", "plant.toml")
        assert e.value.errors[0] == error


# -- end to end ------------------------------------------------------------------------


async def _publish(broker: Mosquitto, topic: str, payload: Any, retain: bool = False) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    await deferToThread(broker.publish, topic, text, retain)


def _point(point_id: str, check: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda state: point_id in state and check(state[point_id])


@pytest_twisted.ensureDeferred
async def test_discovery_messages_create_points_that_their_state_topics_feed(mosquitto):
    # Retained configs, published before hvac-push starts, as on a site that already runs Home Assistant.
    await _publish(mosquitto, "homeassistant/sensor/0x00158d0001/temperature/config", ZIGBEE_TEMP, retain=True)
    await _publish(mosquitto, "homeassistant/binary_sensor/ahu1_door/contact/config", ZIGBEE_CONTACT, retain=True)
    await _publish(mosquitto, "homeassistant/sensor/tasmota_5A1B_power/config", TASMOTA_POWER, retain=True)
    await _publish(mosquitto, "homeassistant/switch/tasmota_5A1B/relay/config", TASMOTA_RELAY, retain=True)
    await _publish(mosquitto, "homeassistant/sensor/broken/x/config", '{"name": "no state topic"}', retain=True)
    # An entity whose point the file declares: the file's point keeps its settings.
    await _publish(mosquitto, "homeassistant/sensor/ahu1_door/battery/config",
                   {"stat_t": "zigbee2mqtt/ahu1_door", "val_tpl": "{{ value_json.linkquality }}"}, retain=True)
    text = textwrap.dedent(f"""
        [mqtt.ha]
        host = "127.0.0.1"
        port = {mosquitto.port}
        topic_template = ""
        reconnect_min = 0.05
        reconnect_max = 0.2
        [mqtt.ha.homeassistant]
        [units.ahu1_door]
        source = "mqtt.ha"
        [units.ahu1_door.points.battery]
        topic = "zigbee2mqtt/ahu1_door"
        json_path = "battery"
        unit = "%"
    """)
    producer = build_producer(producer_specs(parse_config(text, "plant.toml"))["mqtt.ha"])
    assert isinstance(producer, MqttProducer)
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        # Discovered, and the broker has acknowledged the subscriptions to their state topics.
        await eventually(lambda: producer.discovered == 4 and producer.subscriptions_pending == 0, timeout=10)
        # Declared through the hub: they exist, waiting, with their unit and name, before any value.
        state = await until_state(client, _point("plant/0x00158d0001/temperature", lambda p: p["status"] == "waiting"))
        assert state["plant/0x00158d0001/temperature"]["unit"] == "°C"
        assert running.service.hub.meta["plant/Tasmota_AHU1_fan/tasmota_5A1B_power"].name == "Tasmota AHU1 fan Tasmota ENERGY Power"
        await eventually(lambda: running.service.producers[0].status.errors() == {"bad_discovery": 2}, timeout=5)

        await _publish(mosquitto, "zigbee2mqtt/ahu1_room", {"temperature": 21.5, "humidity": 40, "battery": 90})
        await _publish(mosquitto, "zigbee2mqtt/ahu1_door", {"contact": True, "battery": 100})
        await _publish(mosquitto, "tele/tasmota_5A1B/SENSOR", {"ENERGY": {"Power": 230, "Total": 1.5}})
        await _publish(mosquitto, "stat/tasmota_5A1B/POWER", "ON")
        await _publish(mosquitto, "tele/tasmota_5A1B/LWT", "Online")
        expected = {
            "plant/0x00158d0001/temperature": 21.5, "plant/ahu1_door/contact": False,
            "plant/Tasmota_AHU1_fan/tasmota_5A1B_power": 230, "plant/tasmota_5A1B/relay": True,
        }
        state = await until_state(client, lambda s: all(
            pid in s and s[pid]["status"] == "ok" and s[pid]["value"] == v for pid, v in expected.items()
        ))

        # The device says it is gone: its points go down, keeping their last value; back online, back to ok.
        await _publish(mosquitto, "tele/tasmota_5A1B/LWT", "Offline")
        state = await until_state(client, _point("plant/tasmota_5A1B/relay", lambda p: p["status"] == "down"))
        assert state["plant/tasmota_5A1B/relay"]["value"] is True
        hub = running.service.hub
        power, temperature = hub.get("plant/Tasmota_AHU1_fan/tasmota_5A1B_power"), hub.get("plant/0x00158d0001/temperature")
        assert power is not None and power.status == "down"
        assert temperature is not None and temperature.status == "ok"  # another device
        await _publish(mosquitto, "tele/tasmota_5A1B/LWT", "Online")
        await until_state(client, _point("plant/tasmota_5A1B/relay", lambda p: p["status"] == "ok"))

        battery = hub.get("plant/ahu1_door/battery")
        assert battery is not None and battery.value == 100 and battery.unit == "%"
        await _publish(mosquitto, "homeassistant/sensor/ahu1_door/battery/config", "", retain=True)
        assert producer.topics.has("plant/ahu1_door/battery")  # removing the entity leaves the file's point

        # A removed entity (empty retained config) no longer feeds its point.
        await _publish(mosquitto, "homeassistant/switch/tasmota_5A1B/relay/config", "", retain=True)
        await eventually(lambda: producer.topics.routes("stat/tasmota_5A1B/POWER") == [], timeout=5)
        await until_state(client, _point("plant/tasmota_5A1B/relay", lambda p: p["status"] == "stale"))
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)
