"""Units of measure and equipment kinds: derived values right whatever the site's units (issue 19)."""

from __future__ import annotations

import pytest
import pytest_twisted

from hvac_push.analytics import equipment
from hvac_push.analytics.derived import DerivedSettings, split_trapezoid
from hvac_push.analytics.units import UnitError, check, conversion
from hvac_push.ops.plant_file import PlantConfig
from tests.brokers import mosquitto  # noqa: F401 (fixture)
from tests.helpers import point_of
from tests.logwatch import watch_log
from tests.test_derived import POWER, RETURN, SUPPLY, T0, put, setup, value

LOAD = "plant/chiller-1/load"


# -- the unit module ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "quantity", "given", "canonical"),
    [
        ("W", "power", 100_000.0, 100.0),
        ("kW", "power", 3.5, 3.5),
        ("MW", "power", 1.2, 1200.0),
        ("tons", "power", 100.0, 351.685),
        ("TR", "power", 1.0, 3.51685),
        ("ton_of_refrigeration", "power", 2.0, 7.0337),
        ("Btu/h", "power", 12_000.0, 3.51685),
        ("°C", "temperature", 7.0, 7.0),
        ("degF", "temperature", 44.6, 7.0),
        ("°F", "temperature", 212.0, 100.0),
        ("K", "temperature", 280.15, 7.0),
        ("", "power", 42.0, 42.0),  # no unit: already canonical
    ],
)
def test_conversions_to_the_canonical_units(unit, quantity, given, canonical):
    assert conversion(unit, quantity)(given) == pytest.approx(canonical, rel=1e-4)


def test_a_unit_is_parsed_once_and_wrong_ones_are_refused_with_a_reason():
    assert conversion("kW", "power") is conversion("kW", "power")  # cached per unit string
    assert check("°C", "power") == "'°C' is not a unit of power (expected e.g. kW)"
    assert check("%", "temperature") == "'%' is not a unit of temperature (expected e.g. °C)"
    assert check("bananas", "power") == "unknown unit 'bananas'"
    assert check("kW", "power") is None
    with pytest.raises(UnitError):
        conversion("W", "temperature")


def test_kinds_come_from_the_declaration_else_from_the_name():
    assert equipment.kind_of("plant", "chiller-2", {}) == "chiller"
    assert equipment.kind_of("plant", "crac-1", {}) == "crac"
    assert equipment.kind_of("plant", "ahu-12", {}) == "ahu"
    assert equipment.kind_of("plant", "boiler-1", {}) == "boiler"
    assert equipment.kind_of("plant", "heat_pump-3", {}) == "heat_pump"
    assert equipment.kind_of("plant", "hw-1", {}) == equipment.UNKNOWN
    assert equipment.kind_of("plant", "hw-1", {"hw-1": "boiler"}) == "boiler"
    assert equipment.kind_of("plant", "hw-1", {"plant/hw-1": "boiler", "hw-1": "meter"}) == "boiler"


# -- derived values in the site's units -----------------------------------------------


def test_power_in_watts_integrates_to_kwh():
    clock, hub, derived, _ = setup(DerivedSettings(energy_max_gap=3600.0))
    put(hub, POWER, 100_000.0, 0, "W")
    put(hub, POWER, 100_000.0, 3600, "W")  # 100 kW for an hour
    assert value(hub, "plant/chiller-1/energy_kwh") == pytest.approx(100.0)
    assert point_of(hub, "plant/chiller-1/energy_kwh").unit == "kWh"


def _feed_cop(hub, load_value, load_unit, power_value, power_unit, until=900):
    for at in range(0, until + 1, 60):
        put(hub, LOAD, load_value, at, load_unit)
        put(hub, POWER, power_value, at, power_unit)


def test_load_in_tons_and_power_in_kw_give_the_true_cop_and_kw_per_ton():
    clock, hub, derived, _ = setup()
    _feed_cop(hub, 500.0, "tons", 350.0, "kW", until=840)
    assert value(hub, "plant/chiller-1/cop") is None  # 840 s: the 900 s window is not full yet
    _feed_cop(hub, 500.0, "tons", 350.0, "kW", until=900)
    # 500 tons = 1758.43 kW of cooling for 350 kW: COP 5.02, 0.70 kW/ton (not 1.43 and 2.46).
    assert value(hub, "plant/chiller-1/cop") == pytest.approx(500 * 3.5168533 / 350.0, abs=1e-3)
    assert value(hub, "plant/chiller-1/kw_per_ton") == pytest.approx(0.70, abs=1e-3)


def test_watts_and_kilowatts_mixed_give_the_same_cop():
    clock, hub, derived, _ = setup()
    _feed_cop(hub, 700.0, "kW", 140_000.0, "W")
    assert value(hub, "plant/chiller-1/cop") == pytest.approx(5.0)


def test_fahrenheit_and_mixed_temperatures_give_delta_t_in_kelvin():
    clock, hub, derived, _ = setup()
    put(hub, SUPPLY, 44.0, 0, "°F")
    put(hub, RETURN, 64.0, 1, "degF")
    assert value(hub, "plant/chiller-1/delta_t") == pytest.approx(20 * 5 / 9, abs=1e-3)  # 11.111 K, not 20
    assert point_of(hub, "plant/chiller-1/delta_t").unit == "K"
    put(hub, SUPPLY, 7.0, 2, "°C")  # the site changed one sensor: 7 °C against 64 °F (17.78 °C)
    assert value(hub, "plant/chiller-1/delta_t") == pytest.approx(10.778, abs=1e-3)  # not 57 "K"
    put(hub, RETURN, 54.5, 3, "°F")  # 12.5 °C
    assert value(hub, "plant/chiller-1/delta_t") == pytest.approx(5.5, abs=1e-3)


def test_a_heating_unit_gets_a_positive_delta_t():
    clock, hub, derived, _ = setup(DerivedSettings(kinds={"plant/hw-1": "boiler"}))
    for unit in ("boiler-1", "hw-1"):
        put(hub, f"plant/{unit}/supply_temp", 70.0, 0, "°C")
        put(hub, f"plant/{unit}/return_temp", 50.0, 1, "°C")
        assert value(hub, f"plant/{unit}/delta_t") == pytest.approx(20.0), unit
    # A heat pump follows its mode point: heating is supply - return, cooling return - supply.
    put(hub, "plant/heat_pump-1/mode", "heating", 0)
    put(hub, "plant/heat_pump-1/supply_temp", 45.0, 0, "°C")
    put(hub, "plant/heat_pump-1/return_temp", 40.0, 1, "°C")
    assert value(hub, "plant/heat_pump-1/delta_t") == pytest.approx(5.0)
    put(hub, "plant/heat_pump-1/mode", "cooling", 2)
    put(hub, "plant/heat_pump-1/supply_temp", 7.0, 3, "°C")
    put(hub, "plant/heat_pump-1/return_temp", 12.0, 4, "°C")
    assert value(hub, "plant/heat_pump-1/delta_t") == pytest.approx(5.0)


def test_split_trapezoid_cuts_at_zero():
    assert split_trapezoid(100.0, 200.0, 3600.0) == (150.0, 0.0)
    assert split_trapezoid(-100.0, -200.0, 3600.0) == (0.0, 150.0)
    drawn, exported = split_trapezoid(100.0, -100.0, 3600.0)  # crosses zero half-way
    assert (drawn, exported) == pytest.approx((25.0, 25.0))
    drawn, exported = split_trapezoid(-30.0, 90.0, 3600.0)  # zero at a quarter of the hour
    assert (drawn, exported) == pytest.approx((33.75, 3.75))


def test_negative_power_never_decreases_energy_and_is_counted_as_export():
    clock, hub, derived, _ = setup(DerivedSettings(energy_max_gap=3600.0, tariff=0.2))
    put(hub, POWER, 100.0, 0, "kW")
    put(hub, POWER, 100.0, 3600, "kW")  # 100 kWh drawn
    assert hub.get("plant/chiller-1/energy_export_kwh") is None  # nothing exported, no point
    seen = []
    for at, kw in ((5400, -100.0), (7200, -100.0), (9000, 100.0)):
        put(hub, POWER, kw, at, "kW")
        seen.append(value(hub, "plant/chiller-1/energy_kwh"))
    assert seen == sorted(seen)  # never goes down
    # 100 -> -100 over half an hour crosses zero at 15 min: 12.5 kWh each way; then 50 kWh
    # exported; then -100 -> 100 again 12.5 each way.
    assert value(hub, "plant/chiller-1/energy_kwh") == pytest.approx(125.0)
    assert value(hub, "plant/chiller-1/energy_export_kwh") == pytest.approx(75.0)
    assert value(hub, "plant/chiller-1/energy_cost") == pytest.approx(25.0)  # drawn energy only
    assert value(hub, "plant/site/energy_kwh") == pytest.approx(125.0)


def test_an_incompatible_unit_is_refused_and_logged_once_per_point():
    with watch_log() as log:
        clock, hub, derived, _ = setup(DerivedSettings(energy_max_gap=3600.0, forecast_gate=False))
        for at in range(5):
            put(hub, POWER, 12.0, at, "°C")
            put(hub, SUPPLY, 7.0, at, "kW")
            put(hub, RETURN, 12.0, at, "°C")
    events = [e for e in log.events if "refused as an input" in e.get("log_format", "")]
    assert hub.get("plant/chiller-1/energy_kwh") is None
    assert hub.get("plant/chiller-1/delta_t") is None
    assert hub.get(f"{SUPPLY}.forecast_5m") is None
    assert hub.get(f"{RETURN}.forecast_5m") is not None  # the good input still counts (gate off here)
    assert sorted(e["point"] for e in events) == [POWER, SUPPLY]
    assert events[0]["why"] == "'°C' is not a unit of power (expected e.g. kW)"
    assert derived.refused == 10


# -- the plant file: kind, and units the derivations can read ------------------------

PLANT = """
[mqtt.main]
host = "127.0.0.1"
port = 18830

[units.hw-1]
source = "mqtt.main"
kind = "boiler"

[units.hw-1.points.supply_temp]
unit = "degF"

[units.hw-1.points.power]
unit = "{power_unit}"

[units.chiller-1.points.load]
source = "mqtt.main"
unit = "tons"
"""


def _plant(power_unit: str = "W", derived: str = "\n[derived]\n") -> PlantConfig:
    from hvac_push.ops.plant_file import parse_config

    return parse_config(PLANT.replace("{power_unit}", power_unit) + derived, "plant.toml")


def test_a_unit_declares_its_kind_and_the_derivations_get_it():
    plant = _plant()
    assert [(u.key, u.kind) for u in plant.units] == [("hw-1", "boiler"), ("chiller-1", None)]
    settings = plant.derived
    assert settings is not None and dict(settings.kinds) == {"plant/hw-1": "boiler"}


def test_an_unknown_kind_is_a_config_error():
    from hvac_push.ops.plant_file import ConfigError

    from hvac_push.ops.plant_file import parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(PLANT.replace('kind = "boiler"', 'kind = "toaster"').replace("{power_unit}", "W"), "plant.toml")
    assert caught.value.errors == [
        "plant.toml: units.hw-1.kind: expected one of chiller, crac, ahu, boiler, heat_pump, vav, meter, got 'toaster'"
    ]


def test_an_incompatible_unit_on_a_derivation_input_is_a_config_error_naming_the_point():
    from hvac_push.ops.plant_file import ConfigError

    with pytest.raises(ConfigError) as caught:
        _plant("°C")
    assert caught.value.errors == [
        "plant.toml: units.hw-1.points.power.unit: '°C' is not a unit of power (expected e.g. kW): "
        "plant/hw-1/power is an input of [derived]"
    ]
    _plant("°C", derived="")  # nothing derives from it: any unit goes
    _plant("°C", derived="\n[derived]\nenabled = false\n")


# -- end to end: a power point in W over a real MQTT broker, energy in kWh on a WebSocket ------


@pytest_twisted.ensureDeferred
async def test_power_in_watts_over_mqtt_reaches_a_client_as_kwh(tmp_path, mosquitto):
    import json

    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    from hvac_push.ops.plant_file import load_config
    from hvac_push.ops.plant_sources import ConfigReloader
    from hvac_push.sources.mqtt import MqttProducer
    from hvac_push.testing import connect
    from tests.conftest import start_server, stop_server
    from tests.helpers import eventually, until_state, within

    path = tmp_path / "plant.toml"
    path.write_text(f"""
[mqtt.main]
host = "127.0.0.1"
port = {mosquitto.port}
reconnect_min = 0.05

[units.chiller-1]
source = "mqtt.main"
kind = "chiller"

[units.chiller-1.points.power]
unit = "W"

[derived]
energy_max_gap = 60
""")
    running = await start_server()
    reloader = ConfigReloader(running.service, load_config(str(path)))
    try:
        client = await within(5, connect(reactor, running.port, "/ws?points=plant/chiller-1/%23"))
        producer = reloader.sources["mqtt.main"].producer
        assert isinstance(producer, MqttProducer)
        await eventually(lambda: producer.connected, timeout=5)
        now = reactor.seconds()
        for at in (0.0, 10.0):  # 360,000 W for 10 s = 1 kWh (not 1,000)
            payload = json.dumps({"value": 360_000, "ts": now + at})
            await deferToThread(mosquitto.publish, "hvac/plant/chiller-1/power", payload)
        state = await until_state(client, lambda s: s.get("plant/chiller-1/energy_kwh", {}).get("value", 0) > 0)
        assert state["plant/chiller-1/power"]["unit"] == "W"
        assert state["plant/chiller-1/energy_kwh"]["value"] == pytest.approx(1.0)
        assert state["plant/chiller-1/energy_kwh"]["unit"] == "kWh"
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


# -- forecasts that earn their place (issue 19, part 6) ------------------------------------


def test_skill_gate_needs_enough_checks_and_must_beat_every_baseline():
    from hvac_push.analytics.forecast_skill import SkillGate

    perfect, flat, wrong = (SkillGate((300.0,), cycle=None, every=30.0, min_checks=5) for _ in range(3))
    for step in range(0, 200):
        t = 10.0 * step
        perfect.update(t, 0.01 * t, [0.01 * (t + 300.0)])  # a ramp, forecast exactly
        flat.update(t, 5.0, [5.0])  # nothing to forecast: ties "no change", so it does not earn
        wrong.update(t, 0.01 * t, [0.01 * t + 10.0])  # worse than the last value
        if step == 30:  # 300 s in: the first prediction is only now due
            assert not perfect.earns(0)
    assert perfect.earns(0) and not flat.earns(0) and not wrong.earns(0)
    errors = perfect.errors(0)
    assert errors["forecast"] == pytest.approx(0.0, abs=1e-9)
    assert errors["last"] == pytest.approx(3.0)  # 0.01 K/s x 300 s
    assert "cycle" not in errors  # no cycle configured: that baseline is not scored


def test_skill_gate_cycle_baseline_is_the_same_time_one_cycle_earlier():
    import math as m

    from hvac_push.analytics.forecast_skill import SkillGate

    gate = SkillGate((60.0,), cycle=600.0, every=10.0, min_checks=5)
    for step in range(0, 400):
        t = 5.0 * step
        value = m.sin(2 * m.pi * t / 600.0)
        gate.update(t, value, [value])  # a "no change" forecast on a periodic signal
    errors = gate.errors(0)
    assert errors["cycle"] < 0.05 < errors["last"]  # one period back is nearly exact here
    assert not gate.earns(0)  # the forecast loses to the cycle baseline


def test_by_default_forecasts_appear_once_they_beat_the_baselines_and_go_stale_when_they_stop():
    settings = DerivedSettings(forecast_minutes=(5,))  # the gate is on by default
    clock, hub, derived, _ = setup(settings)
    forecast = f"{SUPPLY}.forecast_5m"
    seen_at = None
    for step in range(0, 400):  # a slow ramp: the trend forecast beats "no change" and averages
        at = 10 * step
        put(hub, SUPPLY, 7.0 + 0.001 * at, at, "°C")
        if seen_at is None and hub.get(forecast) is not None:
            seen_at = at
    assert seen_at is not None and seen_at >= 300 + 20 * 30  # first due at 5 min, then 20 checks
    assert point_of(hub, forecast).status == "ok"
    skill = point_of(hub, f"{forecast}_skill")  # the rolling score is published beside it
    assert isinstance(skill.value, float) and 0 < skill.value <= 1 and skill.unit == ""
    gate = derived._gates[SUPPLY]
    gate.min_checks = 10**9  # the skill can no longer be shown: the point goes stale, once
    put(hub, SUPPLY, 11.0, 4000, "°C")
    assert point_of(hub, forecast).status == "stale"
    put(hub, SUPPLY, 11.0, 4010, "°C")
    assert point_of(hub, forecast).ts == T0 + 4000


def test_by_default_a_forecast_that_loses_to_a_baseline_is_never_published_but_its_skill_is():
    import math as m

    clock, hub, derived, _ = setup(DerivedSettings(forecast_minutes=(5,), forecast_cycle=600.0))
    forecast = f"{SUPPLY}.forecast_5m"
    for step in range(0, 600):  # a ten-minute cycle: "same time one cycle earlier" is nearly exact
        at = 10 * step
        put(hub, SUPPLY, 7.0 + m.sin(2 * m.pi * at / 600.0), at, "°C")
        assert hub.get(forecast) is None, at
    skill = point_of(hub, f"{forecast}_skill")
    assert isinstance(skill.value, float) and skill.value < 0
    assert not derived._gates[SUPPLY].earns(0)


def test_the_gate_is_a_plant_file_key():
    from hvac_push.ops.plant_file import ConfigError, parse_config

    base = '[simulator]\nunits = 1\n[derived]\n'
    assert parse_config(base).derived.forecast_gate is True  # type: ignore[union-attr]
    off = parse_config(base + "forecast_gate = false\nforecast_cycle = 600.0\n").derived
    assert off is not None and (off.forecast_gate, off.forecast_cycle) == (False, 600.0)
    with pytest.raises(ConfigError, match="derived.forecast_gate: expected true or false"):
        parse_config(base + 'forecast_gate = "no"\n')


def test_a_restart_continues_the_export_total_too():
    from hvac_push.analytics.derived import DerivedPoints

    settings = DerivedSettings(energy_max_gap=3600.0)
    clock, hub, first, _ = setup(settings)
    put(hub, POWER, -40.0, 0, "kW")
    put(hub, POWER, -40.0, 3600, "kW")  # 40 kWh exported
    first.close()
    second = DerivedPoints(hub, clock, settings)
    put(hub, POWER, -40.0, 5400, "kW")  # 20 kWh more, from the last integrated sample
    assert value(hub, "plant/chiller-1/energy_export_kwh") == pytest.approx(60.0)
    assert value(hub, "plant/chiller-1/energy_kwh") == pytest.approx(0.0)
    second.close()
