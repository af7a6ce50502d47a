"""Plant configs end to end, and reloading them: only changed sources restart, clients stay, bad files are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from hvac_push.config import load_config
from hvac_push.plant import ConfigReloader, producer_specs
from hvac_push.points import AlarmLimits
from hvac_push.testing import connect
from hvac_push.producers.modbus import ModbusPoint, encode
from tests.brokers import modbus_server, mosquitto  # noqa: F401 (fixtures)
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, until_state, within
from tests.wsprobe import first_messages, free_port

ROOT = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).with_name("twistd"))


def reactor():
    from twisted.internet import reactor

    return reactor


def plant_toml(broker_port: int | None, sim_units: int, name: str = "Supply", extra: str = "") -> str:
    text = f"[simulator]\nunits = {sim_units}\nrate = 40\nseed = 3\n"
    if broker_port is not None:
        text += f"""
[mqtt.main]
host = "127.0.0.1"
port = {broker_port}
reconnect_min = 0.05
reconnect_max = 0.2

[units.ahu-9.points.supply_temp]
source = "mqtt.main"
name = "{name}"
unit = "°C"
{extra}
"""
    return text



@pytest_twisted.ensureDeferred
async def test_reload_restarts_only_what_changed_and_keeps_clients(tmp_path, mosquitto):
    path = tmp_path / "plant.toml"
    path.write_text(plant_toml(mosquitto.port, sim_units=1))
    running = await start_server()
    reloader = ConfigReloader(running.service, load_config(str(path)))
    try:
        mqtt_before = reloader.sources["mqtt.main"]
        sim_before = reloader.sources["simulator"]
        assert running.service.hub.meta["plant/ahu-9/supply_temp"].name == "Supply"
        client = await within(5, connect(reactor(), running.port))
        await until_state(client, lambda s: "plant/chiller-1/supply_temp" in s)
        await eventually(lambda: mqtt_before.producer.connected, timeout=5)
        await deferToThread(mosquitto.publish, "hvac/plant/ahu-9/supply_temp", "14.0")
        await until_state(client, lambda s: s.get("plant/ahu-9/supply_temp", {}).get("value") == 14.0)

        # Valid: the simulator grows, the MQTT point gets a new name and limits.
        path.write_text(plant_toml(mosquitto.port, sim_units=2, name="Supply air", extra="alarm = { high = 18 }"))
        assert await within(10, reloader.reload()) is True
        assert reloader.sources["mqtt.main"] is mqtt_before  # unchanged spec: kept running
        assert reloader.sources["simulator"] is not sim_before
        assert sim_before.parent is None and sim_before not in running.service.producers
        meta = running.service.hub.meta["plant/ahu-9/supply_temp"]
        assert meta.name == "Supply air" and meta.limits == AlarmLimits(high=18.0)
        await until_state(client, lambda s: "plant/crac-1/supply_temp" in s)
        await deferToThread(mosquitto.publish, "hvac/plant/ahu-9/supply_temp", "15.0")
        await until_state(client, lambda s: s["plant/ahu-9/supply_temp"]["value"] == 15.0)
        assert mqtt_before.producer.connects == 1  # never reconnected

        # Invalid: refused with its one line, the running config stays.
        path.write_text(plant_toml(mosquitto.port, sim_units=2).replace("rate = 40", 'rate = "fast"'))
        assert await within(10, reloader.reload()) is False
        assert reloader.last_error == f"{path}: simulator.rate: expected a number"
        assert reloader.sources["mqtt.main"] is mqtt_before
        assert running.service.hub.meta["plant/ahu-9/supply_temp"].name == "Supply air"

        # The broker goes away from the config: its source stops, its point is no longer live.
        path.write_text(plant_toml(None, sim_units=2))
        assert await within(10, reloader.reload()) is True
        assert set(reloader.sources) == {"simulator"}
        assert [p.producer.name for p in running.service.producers] == ["simulator"]
        state = await until_state(client, lambda s: s["plant/ahu-9/supply_temp"]["status"] == "stale")
        assert state["plant/ahu-9/supply_temp"]["value"] == 15.0
        assert "plant/ahu-9/supply_temp" not in running.service.hub.meta
        assert client.state == client.STATE_OPEN
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_a_config_with_mqtt_and_modbus_points_feeds_a_client(tmp_path, mosquitto, modbus_server):
    path = tmp_path / "plant.toml"
    path.write_text(f"""
[sites.north]
name = "North plant"

[mqtt.bms]
host = "127.0.0.1"
port = {mosquitto.port}
topic_template = "bms/{{site}}/+/{{unit}}/{{point}}"
discover = false
reconnect_min = 0.05

[modbus.plc]
host = "127.0.0.1"
port = {modbus_server.port}
unit_id = 1
poll_interval = 0.05
timeout = 0.5

[units.chiller-1]
source = "modbus.plc"

[units.chiller-1.points.supply_temp]
unit = "°C"
register = 40
type = "int32"
word_order = "little"
scale = 0.01

[units.chiller-1.points.running]
register = 9
table = "discrete"

[units.ahu-1.points.fan_speed]
source = "mqtt.bms"
unit = "%"
interval = 10
""")
    modbus_server.set("holding", 40, encode(ModbusPoint("n/c/s", 40, type="int32", word_order="little", scale=0.01), -1.25))
    modbus_server.set("discrete", 9, [True])
    running = await start_server()
    reloader = ConfigReloader(running.service, load_config(str(path)))
    try:
        assert sorted(reloader.sources) == ["modbus.plc", "mqtt.bms"]
        assert running.service.hub.meta["north/ahu-1/fan_speed"].expected_interval == 10.0
        client = await within(5, connect(reactor(), running.port))
        await eventually(lambda: reloader.sources["mqtt.bms"].producer.connected, timeout=5)
        await deferToThread(mosquitto.publish, "bms/north/floor-2/ahu-1/fan_speed", "48")
        await deferToThread(mosquitto.publish, "bms/north/floor-2/ahu-7/fan_speed", "1")  # not declared
        state = await until_state(client, lambda s: len(s) >= 3)
        assert state["north/chiller-1/supply_temp"]["value"] == -1.25
        assert state["north/chiller-1/supply_temp"]["unit"] == "°C"
        assert state["north/chiller-1/running"]["value"] is True
        assert state["north/ahu-1/fan_speed"]["value"] == 48 and state["north/ahu-1/fan_speed"]["unit"] == "%"
        await deferToThread(mosquitto.publish, "bms/north/floor-2/ahu-1/fan_speed", "49")
        await until_state(client, lambda s: s["north/ahu-1/fan_speed"]["value"] == 49)
        assert running.hub.get("north/ahu-7/fan_speed") is None  # discover = false: undeclared is ignored
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


def test_specs_leave_out_what_only_the_hub_needs(tmp_path):
    path = tmp_path / "plant.toml"
    path.write_text(plant_toml(18830, 1, name="A"))
    first = producer_specs(load_config(str(path)))
    path.write_text(plant_toml(18830, 1, name="B", extra="interval = 5"))
    assert producer_specs(load_config(str(path))) == first
    path.write_text(plant_toml(18831, 1, name="A"))
    changed = producer_specs(load_config(str(path)))
    assert changed["simulator"] == first["simulator"] and changed["mqtt.main"] != first["mqtt.main"]


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _snapshot_size(port: int) -> int:
    (snapshot,) = first_messages(port, count=1)
    return len(snapshot["points"])


@pytest.mark.slow
def test_sighup_reloads_a_running_twistd(tmp_path):
    port = free_port()
    config = tmp_path / "plant.toml"
    config.write_text(plant_toml(None, sim_units=1))
    log = tmp_path / "twistd.log"
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logfile", str(log), "hvacpush",
         "--listen", f"tcp:{port}:interface=127.0.0.1", "--config", str(config)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert _snapshot_size(port) == 7  # one simulated chiller
        config.write_text(plant_toml(None, sim_units=2))
        process.send_signal(signal.SIGHUP)
        _wait_for(lambda: _snapshot_size(port) == 14, 15, "the reloaded simulator's points")

        config.write_text("[simulator]\nunits = 0\n")
        process.send_signal(signal.SIGHUP)
        _wait_for(lambda: "config reload rejected" in log.read_text(), 15, "the rejection in the log")
        assert f"{config}: simulator.units: must be between 1 and 1000, got 0" in log.read_text()
        assert _snapshot_size(port) == 14  # still serving the old config
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    text = log.read_text() + output
    assert "Traceback" not in text, text
    assert "config reloaded from" in text
