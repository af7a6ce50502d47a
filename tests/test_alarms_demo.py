"""The demo plant on a fake clock: its scheduled fault raises alarms, its alarm rate, and quiet seeded runs."""

from __future__ import annotations

from twisted.internet.task import Clock

from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.analytics.rules import FaultRules, simulator_rules
from hvac_push.core.hub import Hub
from hvac_push.core.points import PointMeta
from hvac_push.ops.tap import Options
from hvac_push.sources.simulator import demo_limits
from hvac_push.sources.simulator import FAULT_FIRST_S, PlantModel, SimulatorProducer

T0 = 1_800_000_000.0


def run_plant(seconds: float, *, faults: bool, seed: int = 7, rules: bool = False,
              step: float = 1.0) -> tuple[AlarmEngine, list[tuple[float, str, str]], FaultRules | None]:
    """Drive the simulator model for C{seconds} of plant time, publishing every point each step into
    a hub with the demo limits; no wall clock anywhere. Returns (engine, transitions, rules or None)."""
    clock = Clock()
    clock.advance(T0)
    model = PlantModel(units=6, seed=seed, faults=faults)
    hub = Hub(epoch="E", clock=clock.seconds)
    for point_id in model.point_ids():
        hub.configure(point_id, PointMeta(expected_interval=1.0, limits=demo_limits(point_id)))
    engine = AlarmEngine(hub, clock)
    heard: list[tuple[float, str, str]] = []
    engine.add_listener(lambda seq, alarm: heard.append((clock.seconds() - T0, alarm.id, alarm.state)))
    fault_rules = FaultRules(hub, engine, simulator_rules("plant", model.unit_names)) if rules else None
    elapsed = 0.0
    while elapsed < seconds:
        model.step(step)
        clock.advance(step)
        elapsed += step
        hub.publish_many(model.samples(clock.seconds()))
    return engine, heard, fault_rules


def test_the_scheduled_fault_raises_the_chiller_high_alarm_within_two_minutes():
    engine, heard, _ = run_plant(150, faults=True)
    raised = [(t, a) for t, a, state in heard if state == "active"]
    assert raised and raised[0][1] == "plant/chiller-1/supply_temp:high"
    assert FAULT_FIRST_S < raised[0][0] < 120


def test_the_demo_alarm_rate_is_about_one_per_ten_minutes():
    engine, heard, _ = run_plant(3600, faults=True)
    raised = [a for _, a, state in heard if state == "active"]
    # One chiller fault every 10 minutes: 6 in the hour, nothing else (measured: 6).
    assert raised == ["plant/chiller-1/supply_temp:high"] * 6
    assert engine.rate() == 1


def test_a_seeded_plant_without_faults_stays_quiet_for_an_hour():
    engine, heard, _ = run_plant(3600, faults=False)
    assert heard == []


def test_faults_default_on_for_a_plain_run_and_off_with_a_seed():
    from hvac_push.ops.tap import makeService
    from twisted.internet.testing import MemoryReactorClock

    for argv, expected in (([], True), (["--sim-seed", "3"], False), (["--sim-seed", "3", "--sim-faults", "on"], True),
                           (["--sim-faults", "off"], False)):
        options = Options()
        options.parseOptions(argv)
        service = makeService(options, MemoryReactorClock())
        simulator = service.producers[0].producer
        assert isinstance(simulator, SimulatorProducer)
        assert simulator.model.faults is expected, argv


def test_the_longest_shelve_is_an_option():
    from hvac_push.ops.tap import makeService
    from twisted.internet.testing import MemoryReactorClock

    options = Options()
    options.parseOptions(["--max-shelve", "30"])
    assert makeService(options, MemoryReactorClock()).alarms.max_shelve == 1800.0
    options = Options()
    options.parseOptions([])
    assert makeService(options, MemoryReactorClock()).alarms.max_shelve == 8 * 3600.0
