"""Fault detection rules: each fires on a crafted input after its persistence time, clears by
itself, and stays silent on an hour of the simulator's normal operation."""

from __future__ import annotations

from typing import Callable

import pytest
from twisted.internet.task import Clock

from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.analytics.rules import FaultRules, Thresholds, UnitRules
from hvac_push.core.hub import Hub
from hvac_push.core.points import Sample
from tests.test_alarms_demo import run_plant

U = "site/unit"
AHU = {"supply": "sat", "setpoint": "sat_sp", "cooling_valve": "clg", "heating_valve": "htg", "mixed": "mat",
       "return": "rat", "outside": "oat"}
CHILLER = {"supply": "chws", "return": "chwr", "running": "run", "approach_leaving": "chws",
           "approach_reference": "evap"}


def setup(rules: UnitRules) -> tuple[AlarmEngine, Callable[..., None]]:
    clock = Clock()
    hub = Hub(epoch="E", clock=clock.seconds)
    engine = AlarmEngine(hub, clock)
    FaultRules(hub, engine, [rules])

    def feed(seconds: float, **values: float | bool) -> None:
        """Publish C{values} every 10 s for C{seconds}."""
        for _ in range(int(seconds // 10)):
            clock.advance(10)
            hub.publish_many(Sample(f"{U}/{name}", value, "", clock.seconds()) for name, value in values.items())

    return engine, feed


def listed(engine):
    return {(a.id, a.state) for a in engine.alarms.values()}


NORMAL_AHU = dict(sat=13.0, sat_sp=13.0, clg=40.0, htg=0.0, mat=18.0, rat=22.0, oat=10.0)


@pytest.mark.parametrize("change, alarm", [
    (dict(sat=16.0, clg=100.0), f"{U}/sat:supply_not_at_setpoint"),
    (dict(sat=10.0, clg=0.0, htg=100.0), f"{U}/sat:supply_not_at_setpoint"),
    (dict(htg=30.0), f"{U}/clg:heating_and_cooling"),
    (dict(mat=25.0), f"{U}/mat:mixed_air_out_of_range"),
    (dict(mat=7.0), f"{U}/mat:mixed_air_out_of_range"),
])
def test_air_handler_rules_fire_after_they_persist_and_clear_by_themselves(change, alarm):
    engine, feed = setup(UnitRules(U, "ahu", AHU))
    feed(700, **NORMAL_AHU)
    assert engine.alarms == {}
    feed(590, **{**NORMAL_AHU, **change})
    assert engine.alarms == {}  # not yet for the whole 600 s
    feed(20, **{**NORMAL_AHU, **change})
    assert listed(engine) == {(alarm, "active")}
    found = engine.alarms[alarm]
    assert found.severity == "warning" and found.priority == "low" and not found.ack_required
    feed(10, **NORMAL_AHU)
    assert engine.alarms == {}


def test_a_saturated_valve_with_the_supply_on_setpoint_is_no_fault():
    engine, feed = setup(UnitRules(U, "ahu", AHU))
    feed(1800, **{**NORMAL_AHU, "clg": 100.0, "sat": 13.5})
    assert engine.alarms == {}


def test_low_delta_t_syndrome_only_while_the_chiller_runs():
    engine, feed = setup(UnitRules(U, "chiller", CHILLER, Thresholds(design_delta_t=6.0, sustain=900)))
    feed(1000, chws=7.0, chwr=9.5, run=False, evap=5.0)  # 2.5 < 3, but stopped
    assert engine.alarms == {}
    feed(890, chws=7.0, chwr=9.5, run=True, evap=5.0)
    assert engine.alarms == {}
    feed(20, chws=7.0, chwr=9.5, run=True, evap=5.0)
    assert listed(engine) == {(f"{U}/chwr:low_delta_t", "active")}
    feed(10, chws=7.0, chwr=13.0, run=True, evap=5.0)
    assert engine.alarms == {}


def test_a_wide_approach_raises_the_approach_rule():
    engine, feed = setup(UnitRules(U, "chiller", CHILLER))
    feed(1200, chws=7.0, chwr=12.0, run=True, evap=5.0)
    assert engine.alarms == {}
    feed(610, chws=7.0, chwr=12.0, run=True, evap=3.0)
    assert listed(engine) == {(f"{U}/chws:approach", "active")}


def test_a_stuck_sensor_is_found_only_while_the_unit_runs_and_noise_does_not_hide_it():
    rules = UnitRules(U, "chiller", {"running": "run"}, Thresholds(stuck_band=0.05, stuck_after=1200), stuck=("chws",))
    engine, feed = setup(rules)
    for _ in range(30):  # 3000 s stopped: no count
        feed(50, chws=7.0, run=False)
        feed(50, chws=7.02, run=False)
    assert engine.alarms == {}
    for _ in range(6):
        feed(100, chws=7.0, run=True)
        feed(100, chws=7.03, run=True)  # noise within the band
    assert listed(engine) == {(f"{U}/chws:stuck", "active")}
    feed(10, chws=8.0, run=True)
    assert engine.alarms == {}


def test_out_of_physical_range():
    engine, feed = setup(UnitRules(U, ranges={"oat": (-40.0, 55.0)}))
    feed(50, oat=85.0)
    assert engine.alarms == {}
    feed(20, oat=85.0)
    assert listed(engine) == {(f"{U}/oat:out_of_range", "active")}
    feed(10, oat=20.0)
    assert engine.alarms == {}


def test_bad_rule_settings_are_refused():
    with pytest.raises(ValueError, match="rule kind"):
        UnitRules(U, "boiler")
    with pytest.raises(ValueError, match="unknown rule role"):
        UnitRules(U, "ahu", {"suply": "x"})


def test_the_rules_stay_silent_on_an_hour_of_normal_simulator_operation():
    engine, heard, rules = run_plant(3600, faults=False, rules=True)
    assert heard == [] and rules is not None and rules._held  # evaluated, never on


PLANT = """
[mqtt.main]
host = "127.0.0.1"

[units.ahu-1]
source = "mqtt.main"

[units.ahu-1.points.sat]
[units.ahu-1.points.sat_sp]
[units.ahu-1.points.clg]
[units.ahu-1.points.oat]

[rules.ahu-1]
kind = "ahu"
points = { supply = "sat", setpoint = "sat_sp", cooling_valve = "clg" }
ranges = { oat = [-40, 55] }
stuck = ["sat"]
sustain = 60
"""


def test_rules_come_from_the_plant_file_per_unit_and_run_in_the_server():
    from twisted.internet.testing import MemoryReactorClock

    from hvac_push.ops.plant_file import parse_config
    from hvac_push.ops.plant_sources import install_plant
    from hvac_push.ops.service import PushService

    plant = parse_config(PLANT)
    (rules,) = plant.rules
    assert (rules.unit, rules.kind, rules.thresholds.sustain, rules.ranges, rules.stuck) == (
        "plant/ahu-1", "ahu", 60.0, {"oat": (-40.0, 55.0)}, ("sat",))
    reactor = MemoryReactorClock()
    push = PushService(reactor)
    reloader = install_plant(push, plant)
    assert reloader.rules is not None
    for second in range(0, 80, 10):
        push.hub.publish_many([Sample(f"plant/ahu-1/{n}", v, "", 1000.0 + second)
                               for n, v in (("sat", 17.0), ("sat_sp", 13.0), ("clg", 100.0))])
    assert push.alarms.alarms["plant/ahu-1/sat:supply_not_at_setpoint"].state == "active"
    reloader.rules.close()


@pytest.mark.parametrize("table, error", [
    ('[rules.ahu-9]\nkind = "ahu"\n', "rules.ahu-9: unknown unit"),
    ('[rules.ahu-1]\nkind = "boiler"\n', "expected one of ahu, chiller, any"),
    ('[rules.ahu-1]\npoints = { supply = "nope" }\n', "rules.ahu-1.points.supply: expected the name of a point"),
    ('[rules.ahu-1]\npoints = { suply = "sat" }\n', "unknown role"),
    ('[rules.ahu-1]\nranges = { oat = [5, 1] }\n', "expected [low, high]"),
    ('[rules.ahu-1]\nsustain = -1\n', "rules.ahu-1.sustain: must be between"),
    ('[rules.ahu-1]\nsustian = 5\n', "did you mean 'sustain'"),
])
def test_bad_rules_tables_are_reported_by_path(table, error):
    from hvac_push.ops.plant_file import ConfigError, parse_config

    text = PLANT.split("[rules.ahu-1]")[0] + table
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert error in str(e.value)
