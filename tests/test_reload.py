"""hvac_push.ops.plant_sources (with hvac_push.ops.plant_file): plant configs end to end, and reloading them;
only changed sources restart, clients stay, bad files are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from hvac_push.ops.plant_file import load_config
from hvac_push.ops.plant_sources import ConfigReloader, producer_specs
from hvac_push.core.points import AlarmLimits
from hvac_push.testing import connect
from hvac_push.sources.modbus import ModbusPoint, encode
from hvac_push.sources.mqtt import MqttProducer
from tests.brokers import modbus_server, mosquitto  # noqa: F401 (fixtures)
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, point_of, until_state, within
from tests.wsprobe import bound_ports, first_messages

ROOT = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).with_name("twistd"))

T = TypeVar("T")


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
        mqtt = mqtt_before.producer
        assert isinstance(mqtt, MqttProducer)
        await eventually(lambda: mqtt.connected, timeout=5)
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
        await until_state(client, lambda s: s.get("plant/ahu-9/supply_temp", {}).get("value") == 15.0)
        assert mqtt.connects == 1  # never reconnected

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
        state = await until_state(client, lambda s: s.get("plant/ahu-9/supply_temp", {}).get("status") == "stale")
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
        bms = reloader.sources["mqtt.bms"].producer
        assert isinstance(bms, MqttProducer)
        await eventually(lambda: bms.connected, timeout=5)
        await deferToThread(mosquitto.publish, "bms/north/floor-2/ahu-1/fan_speed", "48")
        await deferToThread(mosquitto.publish, "bms/north/floor-2/ahu-7/fan_speed", "1")  # not declared
        # Declared points are there from the start (value null): wait for all three readings.
        state = await until_state(client, lambda s: len(s) >= 3 and all(p["value"] is not None for p in s.values()))
        assert state["north/chiller-1/supply_temp"]["value"] == -1.25
        assert state["north/chiller-1/supply_temp"]["unit"] == "°C"
        assert state["north/chiller-1/running"]["value"] is True
        assert state["north/ahu-1/fan_speed"]["value"] == 48 and state["north/ahu-1/fan_speed"]["unit"] == "%"
        await deferToThread(mosquitto.publish, "bms/north/floor-2/ahu-1/fan_speed", "49")
        await until_state(client, lambda s: s.get("north/ahu-1/fan_speed", {}).get("value") == 49)
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


def _wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
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
    config = tmp_path / "plant.toml"
    config.write_text(plant_toml(None, sim_units=1))
    log = tmp_path / "twistd.log"
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logfile", str(log), "hvacpush",
         "--listen", "tcp:0:interface=127.0.0.1", "--port-file", str(tmp_path / "ports"), "--config", str(config)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        [port] = bound_ports(tmp_path / "ports", alive=lambda: process.poll() is None)
        # The port file is written once the port listens, maybe before the simulator's first values.
        _wait_for(lambda: _snapshot_size(port) == 7, 15, "one simulated chiller's points")
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


# -- [derived] ------------------------------------------------------------------

DERIVED_PLANT = """
[modbus.plc]
host = "127.0.0.1"
port = {port}
poll_interval = 0.05
timeout = 0.5

[units.chiller-1]
source = "modbus.plc"
name = "{name}"

[units.chiller-1.points.supply_temp]
unit = "°C"
register = 10
type = "int16"
scale = 0.1

[units.chiller-1.points.return_temp]
unit = "°C"
register = 11
type = "int16"
scale = 0.1

[units.chiller-1.points.power]
unit = "kW"
register = 12
"""


def _fired(deferred):
    results: list = []
    deferred.addBoth(results.append)
    assert len(results) == 1, "expected the reload to finish at once"
    return results[0]


def test_reload_applies_new_derived_settings_and_keeps_the_energy_totals(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    from hvac_push.core.points import Sample
    from hvac_push.ops.service import PushService

    power, supply = "plant/chiller-1/power", "plant/chiller-1/supply_temp"
    path = tmp_path / "plant.toml"
    # Forecasts from the first sample (gate off) so that a reload's effect on them shows at once.
    path.write_text(DERIVED_PLANT.format(port=15020, name="A") + "[derived]\ntariff = 0.5\nforecast_gate = false\n")
    push = PushService(MemoryReactorClock())
    reloader = ConfigReloader(push, load_config(str(path)))
    hub = push.hub
    first = reloader.derived
    assert first is not None and first.settings.tariff == 0.5
    hub.publish(Sample(power, 60.0, "kW", 0.0))
    hub.publish(Sample(power, 60.0, "kW", 60.0))  # 60 kW for a minute: 1 kWh
    hub.publish(Sample(supply, 6.5, "°C", 60.0))
    energy, cost = point_of(hub, "plant/chiller-1/energy_kwh"), point_of(hub, "plant/chiller-1/energy_cost")
    assert (energy.value, cost.value) == (1.0, 0.5)
    assert point_of(hub, f"{supply}.forecast_5m").value == 6.5

    # Another change, the same [derived]: the derived points keep running untouched.
    path.write_text(DERIVED_PLANT.format(port=15020, name="B") + "[derived]\ntariff = 0.5\nforecast_gate = false\n")
    assert _fired(reloader.reload()) is True
    kept = reloader.derived
    assert kept is first

    # New settings: replaced; the energy total continues, a dropped horizon goes stale.
    path.write_text(DERIVED_PLANT.format(port=15020, name="B")
                    + "[derived]\ntariff = 1.0\nforecast_minutes = [10]\nforecast_gate = false\n")
    assert _fired(reloader.reload()) is True
    replaced = reloader.derived
    assert replaced is not None and replaced is not first and replaced.settings.tariff == 1.0
    assert point_of(hub, f"{supply}.forecast_5m").status == "stale"
    assert point_of(hub, f"{supply}.forecast_10m").value == 6.5  # derived at once from the current input
    assert point_of(hub, "plant/chiller-1/energy_kwh").status == "ok"
    hub.publish(Sample(power, 60.0, "kW", 120.0))
    assert point_of(hub, "plant/chiller-1/energy_kwh").value == pytest.approx(2.0)
    assert point_of(hub, "plant/chiller-1/energy_cost").value == pytest.approx(1.5)  # 0.5 + 1 kWh at 1.0
    assert point_of(hub, "plant/site/energy_kwh").value == pytest.approx(2.0)

    # [derived] removed: nothing computes them any more, they keep their value as stale.
    path.write_text(DERIVED_PLANT.format(port=15020, name="B"))
    assert _fired(reloader.reload()) is True
    assert reloader.derived is None
    hub.publish(Sample(power, 60.0, "kW", 180.0))
    energy = point_of(hub, "plant/chiller-1/energy_kwh")
    assert energy.value == pytest.approx(2.0) and energy.status == "stale"
    assert point_of(hub, f"{supply}.forecast_10m").status == "stale"

    # An invalid [derived] is refused like any other error; back with enabled = false: still none.
    path.write_text(DERIVED_PLANT.format(port=15020, name="B") + "[derived]\ntariff = -1\n")
    assert _fired(reloader.reload()) is False
    assert reloader.last_error == f"{path}: derived.tariff: must be between 0 and 1000, got -1"
    path.write_text(DERIVED_PLANT.format(port=15020, name="B") + "[derived]\nenabled = false\n")
    assert _fired(reloader.reload()) is True and reloader.derived is None


@pytest_twisted.ensureDeferred
async def test_a_config_with_derived_points_feeds_them_to_a_client(tmp_path, modbus_server):
    path = tmp_path / "plant.toml"
    path.write_text(
        DERIVED_PLANT.format(port=modbus_server.port, name="Chiller 1")
        + "[derived]\nforecast_minutes = [15]\ntariff = 0.2\ncurrency = \"CHF\"\nforecast_gate = false\n"
    )
    temp = ModbusPoint("p/u/t", 10, type="int16", scale=0.1)
    modbus_server.set("holding", 10, encode(temp, 6.5))
    modbus_server.set("holding", 11, encode(temp, 12.0))
    modbus_server.set("holding", 12, [3600])  # 3600 kW: 1 kWh a second
    running = await start_server()
    reloader = ConfigReloader(running.service, load_config(str(path)))
    try:
        assert reloader.derived is not None
        client = await within(5, connect(reactor(), running.port, "/ws?points=plant/%23"))
        state = await until_state(
            client,
            lambda s: "plant/chiller-1/delta_t" in s and s.get("plant/chiller-1/energy_kwh", {}).get("value", 0) > 0,
        )
        assert state["plant/chiller-1/delta_t"]["value"] == pytest.approx(5.5)
        assert state["plant/chiller-1/delta_t"]["unit"] == "K"
        assert state["plant/chiller-1/supply_temp.forecast_15m"]["value"] == pytest.approx(6.5)
        energy, cost = state["plant/chiller-1/energy_kwh"], state["plant/chiller-1/energy_cost"]
        assert energy["unit"] == "kWh" and cost["unit"] == "CHF"
        assert cost["value"] == pytest.approx(energy["value"] * 0.2, abs=1e-5)
        assert state["plant/site/energy_kwh"]["value"] == pytest.approx(energy["value"])
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest.mark.slow
def test_twistd_with_a_simulator_and_a_derived_table_serves_derived_points(tmp_path):
    config = tmp_path / "plant.toml"
    config.write_text('[simulator]\nunits = 3\nrate = 60\nseed = 5\n\n[derived]\ntariff = 0.3\ncurrency = "USD"\n'
                      'forecast_gate = false\n')
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "hvacpush", "--listen", "tcp:0:interface=127.0.0.1",
         "--port-file", str(tmp_path / "ports"), "--config", str(config)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    wanted = ("plant/chiller-1/energy_cost", "plant/chiller-1/supply_temp.forecast_30m", "plant/ahu-1/delta_t")
    try:
        [port] = bound_ports(tmp_path / "ports", alive=lambda: process.poll() is None)

        def snapshot():
            (message,) = first_messages(port, count=1)
            points = message["points"]
            return points if all(w in points for w in wanted) else None

        points = _wait_for(snapshot, 20, "derived points in the snapshot")
        assert points["plant/chiller-1/energy_cost"]["unit"] == "USD"
        assert "plant/ahu-1/outside_schedule" in points or "plant/ahu-1/starts_per_hour" in points
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output, output
