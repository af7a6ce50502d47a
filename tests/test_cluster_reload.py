"""Regression: after a config reload, MQTT sources still take point names and intervals from payloads.

install_links wired only the MQTT sources that existed when the node started;
a reload replaces a changed source with a new producer, which nobody wired.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.threads import deferToThread

from hvac_push.ops.cluster import install_links
from hvac_push.ops.plant_file import load_config
from hvac_push.ops.plant_sources import ConfigReloader
from hvac_push.sources.mqtt import MqttProducer
from tests.brokers import Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, within


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _plant(port: int, client_id: str) -> str:
    return f'[mqtt.bms]\nhost = "127.0.0.1"\nport = {port}\nclient_id = "{client_id}"\nreconnect_min = 0.05\n'


@pytest_twisted.ensureDeferred
async def test_a_reloaded_mqtt_source_still_takes_names_and_intervals_from_payloads(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    path = tmp_path / "plant.toml"
    path.write_text(_plant(mosquitto.port, "before"))
    running = await start_server()
    reloader = ConfigReloader(running.service, load_config(str(path)))
    install_links(running.service, reactor())
    try:
        path.write_text(_plant(mosquitto.port, "after"))  # a changed spec: the source is rebuilt
        assert await within(10, reloader.reload()) is True
        source = reloader.sources["mqtt.bms"].producer
        assert isinstance(source, MqttProducer) and source.client_id == "after"
        await eventually(lambda: source.connected, 10)
        payload = json.dumps({"value": 21.5, "unit": "°C", "name": "Zone 4 temperature", "interval": 7})
        await deferToThread(mosquitto.publish, "hvac/plant/zone-4/temp", payload)
        await eventually(lambda: running.hub.meta.get("plant/zone-4/temp") is not None, 10)
        meta = running.hub.meta["plant/zone-4/temp"]
        assert (meta.name, meta.expected_interval) == ("Zone 4 temperature", 7.0)
    finally:
        await stop_server(running)
