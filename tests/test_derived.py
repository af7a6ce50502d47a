"""hvac_push.analytics.derived and hvac_push.analytics.forecast: derived points against hand-computed values,
on a fake clock; one end-to-end check."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.analytics.derived import DerivedPoints, DerivedSettings, Schedule, Zone, simulator_settings
from hvac_push.analytics.forecast import DampedHolt, Forecaster, HoltParams
from hvac_push.core.hub import Hub
from hvac_push.core.points import AlarmLimits, PointMeta, Sample
from tests.helpers import point_of

T0 = 1_704_067_200.0  # 2024-01-01 00:00 UTC, a Monday
SUPPLY = "plant/chiller-1/supply_temp"
RETURN = "plant/chiller-1/return_temp"
POWER = "plant/chiller-1/power"


def setup(
    settings: DerivedSettings = DerivedSettings(), alarms: bool = False
) -> tuple[Clock, Hub, DerivedPoints, AlarmEngine | None]:
    clock = Clock()
    clock.advance(T0)
    hub = Hub(epoch="E", clock=clock.seconds)
    engine = AlarmEngine(hub, clock) if alarms else None
    derived = DerivedPoints(hub, clock, settings, alarms=engine)
    return clock, hub, derived, engine


def put(hub, point_id, value, at, unit=""):
    hub.publish(Sample(point_id, value, unit, T0 + at))


def value(hub, point_id):
    point = hub.get(point_id)
    return None if point is None else point.value


# -- the smoother -----------------------------------------------------------------


def test_holt_update_follows_the_continuous_time_formulas():
    p = HoltParams(tau_level=100.0, tau_trend=200.0, tau_damp=300.0)
    holt = DampedHolt(p)
    holt.update(0.0, 10.0)
    assert (holt.level, holt.trend) == (10.0, 0.0)
    holt.update(50.0, 12.0)
    alpha = 1 - math.exp(-50 / 100)
    level = 10 + alpha * 2
    beta = 1 - math.exp(-50 / 200)
    trend = beta * (level - 10) / 50
    assert holt.level == pytest.approx(level) and holt.trend == pytest.approx(trend)
    # The damped forecast flattens towards level + trend * tau_damp.
    assert holt.forecast(600) == pytest.approx(level + trend * 300 * (1 - math.exp(-2)))
    assert holt.seconds_to(level + 1.0) == pytest.approx(1.0 / trend)
    assert holt.seconds_to(level - 1.0) is None  # the trend moves away from it


def test_holt_is_time_aware_and_drops_old_samples_and_restarts_after_a_gap():
    fine, coarse = DampedHolt(), DampedHolt()
    for i in range(601):
        fine.update(i * 0.5, 20.0 + 0.01 * i * 0.5)
    for i in range(301):
        coarse.update(float(i), 20.0 + 0.01 * i)
    assert fine.level == pytest.approx(coarse.level, abs=0.01)
    assert fine.trend == pytest.approx(coarse.trend, rel=0.02)
    assert coarse.update(300.0, 99.0) is False and coarse.update(10.0, 99.0) is False
    coarse.update(300.0 + HoltParams().max_gap + 1, 5.0)
    assert (coarse.level, coarse.trend, coarse.samples) == (5.0, 0.0, 1)


def test_forecaster_learns_that_a_deviation_persists_for_a_slow_cycle():
    f = Forecaster((300.0,), HoltParams(tau_level=600.0), learn_every=10.0)
    for i in range(20_000):
        t = float(i)
        f.update(t, 20.0 + math.sin(2 * math.pi * t / 7200.0))  # a slow two-hour cycle
    gain = f.learners[300.0].gain(1e-6)
    assert 0.5 < gain <= 1.0
    assert abs(f.forecast(300.0) - (20.0 + math.sin(2 * math.pi * (20_299) / 7200.0))) < 0.15


# -- forecast points and limits ------------------------------------------------------


def test_with_the_gate_off_forecast_points_are_published_for_each_temperature_and_horizon_from_the_first_sample():
    clock, hub, derived, _ = setup(DerivedSettings(forecast_gate=False))
    put(hub, SUPPLY, 7.0, 0, "°C")
    put(hub, SUPPLY, 7.0, 1, "°C")
    for minutes in (5, 15, 30):
        point = point_of(hub, f"{SUPPLY}.forecast_{minutes}m")
        assert point.value == 7.0 and point.unit == "°C" and point.ts == T0 + 1
    # Derived points are never inputs: no forecast of a forecast.
    assert hub.get(f"{SUPPLY}.forecast_5m.forecast_5m") is None
    assert hub.get("plant/chiller-1/setpoint.forecast_5m") is None


def test_by_default_no_forecast_is_published_before_it_has_shown_its_skill():
    clock, hub, derived, _ = setup()
    for at in range(0, 300, 10):  # five minutes: not one 5-minute forecast has come due yet
        put(hub, SUPPLY, 7.0 + 0.001 * at, at, "°C")
    for minutes in (5, 15, 30):
        assert hub.get(f"{SUPPLY}.forecast_{minutes}m") is None
        assert hub.get(f"{SUPPLY}.forecast_{minutes}m_skill") is None


def test_minutes_to_limit_and_a_predicted_alarm_before_the_real_one():
    settings = DerivedSettings(predict_within_min=10.0)
    clock, hub, derived, engine = setup(settings, alarms=True)
    assert engine is not None
    hub.configure(SUPPLY, PointMeta(limits=AlarmLimits(high=9.0, low=4.0, deadband=0.2)))
    raised: list[tuple[str, str, Any]] = []
    engine.add_listener(lambda seq, alarm: raised.append((alarm.kind, alarm.state, alarm.value)))
    put(hub, SUPPLY, 7.0, 0, "°C")
    assert value(hub, f"{SUPPLY}.minutes_to_limit") == settings.limit_lookahead_min  # flat: no crossing
    # Rise by 0.01 °C every 5 s (0.12 °C/min) towards 9.
    for i in range(1, 160):
        put(hub, SUPPLY, 7.0 + 0.01 * i, 5 * i, "°C")
        holt = derived._trackers[SUPPLY]
        expected = min((9.0 - holt.level) / holt.trend / 60.0, settings.limit_lookahead_min)
        assert value(hub, f"{SUPPLY}.minutes_to_limit") == pytest.approx(expected, abs=0.01)
    assert raised and raised[0][:2] == ("predicted", "active") and raised[0][2] < 9.0
    assert ("high", "active") not in [r[:2] for r in raised]
    put(hub, SUPPLY, 9.2, 5 * 160, "°C")  # the real alarm takes over
    kinds = [r[:2] for r in raised]
    assert ("high", "active") in kinds and ("predicted", "returned") in kinds
    assert value(hub, f"{SUPPLY}.minutes_to_limit") >= 0


# -- energy -----------------------------------------------------------------------


def test_energy_is_the_trapezoid_integral_with_cost_per_unit_and_site():
    clock, hub, derived, _ = setup(DerivedSettings(tariff=0.2, energy_max_gap=3600.0))
    put(hub, POWER, 100.0, 0, "kW")
    put(hub, POWER, 200.0, 1800, "kW")  # (100 + 200) / 2 kW x 0.5 h = 75 kWh
    put(hub, "plant/ahu-1/power", 10.0, 0, "kW")
    put(hub, "plant/ahu-1/power", 10.0, 3600, "kW")  # 10 kWh
    assert value(hub, "plant/chiller-1/energy_kwh") == pytest.approx(75.0)
    assert value(hub, "plant/chiller-1/energy_cost") == pytest.approx(15.0)
    assert value(hub, "plant/site/energy_kwh") == pytest.approx(85.0)
    assert value(hub, "plant/site/energy_cost") == pytest.approx(17.0)
    assert point_of(hub, "plant/site/energy_kwh").ts == T0 + 3600  # never earlier than a part of it


def test_an_energy_gap_longer_than_the_maximum_is_not_bridged():
    clock, hub, derived, _ = setup(DerivedSettings(energy_max_gap=300.0))
    put(hub, POWER, 120.0, 0, "kW")
    put(hub, POWER, 120.0, 300, "kW")  # 120 kW x 300 s = 10 kWh
    put(hub, POWER, 600.0, 1000, "kW")  # a 700 s gap: nothing
    put(hub, POWER, 0.0, 1060, "kW")  # (600 + 0) / 2 x 60 s = 5 kWh
    assert value(hub, "plant/chiller-1/energy_kwh") == pytest.approx(15.0)


def test_out_of_order_and_replayed_samples_are_not_counted():
    clock, hub, derived, _ = setup(DerivedSettings(energy_max_gap=3600.0))
    put(hub, POWER, 100.0, 0, "kW")
    put(hub, POWER, 100.0, 360, "kW")  # 10 kWh
    put(hub, POWER, 500.0, 180, "kW")  # older than the newest: the hub refuses it
    put(hub, POWER, 900.0, 360, "kW")  # same ts, new value: stored by the hub, dropped here
    assert value(hub, "plant/chiller-1/energy_kwh") == pytest.approx(10.0)
    assert derived.dropped == 1
    put(hub, POWER, 100.0, 720, "kW")  # integrates from the first sample at 360 s (100 kW)
    assert value(hub, "plant/chiller-1/energy_kwh") == pytest.approx(20.0)


def test_a_restart_continues_the_totals_already_in_the_hub():
    settings = DerivedSettings(tariff=0.5, energy_max_gap=3600.0)
    clock, hub, first, _ = setup(settings)
    put(hub, POWER, 100.0, 0, "kW")
    put(hub, POWER, 100.0, 3600, "kW")  # 100 kWh
    first.close()
    second = DerivedPoints(hub, clock, settings)
    # Nothing re-counted at start (the power point in the hub is the one already integrated).
    assert value(hub, "plant/chiller-1/energy_kwh") == pytest.approx(100.0)
    put(hub, POWER, 300.0, 5400, "kW")  # (100 + 300) / 2 x 0.5 h = 100 kWh more
    assert value(hub, "plant/chiller-1/energy_kwh") == pytest.approx(200.0)
    assert value(hub, "plant/chiller-1/energy_cost") == pytest.approx(100.0)
    assert value(hub, "plant/site/energy_kwh") == pytest.approx(200.0)
    second.close()
    # A power sample that arrived while nobody integrated: no neighbour to pair it with.
    put(hub, POWER, 300.0, 7200, "kW")
    third = DerivedPoints(hub, clock, settings)
    assert value(hub, "plant/chiller-1/energy_kwh") == pytest.approx(200.0)
    put(hub, POWER, 300.0, 9000, "kW")  # 300 kW x 0.5 h
    assert value(hub, "plant/chiller-1/energy_kwh") == pytest.approx(350.0)
    third.close()


# -- efficiency and waste -------------------------------------------------------------


def test_delta_t_cop_and_kw_per_ton():
    clock, hub, derived, _ = setup()
    put(hub, SUPPLY, 7.0, 0, "°C")
    put(hub, RETURN, 12.5, 1, "°C")
    assert value(hub, "plant/chiller-1/delta_t") == pytest.approx(5.5)
    assert point_of(hub, "plant/chiller-1/delta_t").ts == T0 + 1
    put(hub, "plant/chiller-1/load", 700.0, 2, "kW")
    put(hub, POWER, 140.0, 3, "kW")
    assert value(hub, "plant/chiller-1/cop") is None  # not before a full cop_window (issue 19)
    for at in (150, 300, 450, 600, 750, 903):  # no gap beyond energy_max_gap; 900 s of both: the window is full
        put(hub, "plant/chiller-1/load", 700.0, at, "kW")
        put(hub, POWER, 140.0, at, "kW")
    assert value(hub, "plant/chiller-1/cop") == pytest.approx(5.0)
    assert value(hub, "plant/chiller-1/kw_per_ton") == pytest.approx(3.51685 / 5.0, abs=1e-3)
    put(hub, POWER, 0.1, 904, "kW")  # averaged over the window: still mostly 140 kW
    assert value(hub, "plant/chiller-1/cop") == pytest.approx(700.0 / (140.0 + (0.1 - 140.0) * (1 - math.exp(-1 / 900))), rel=1e-3)


def test_short_cycling_counts_starts_in_the_last_hour():
    clock, hub, derived, engine = setup(DerivedSettings(max_starts_per_hour=2), alarms=True)
    assert engine is not None
    comp = "plant/chiller-1/compressor"
    put(hub, comp, False, 0)
    for start in (100, 200, 300):
        put(hub, comp, True, start)
        put(hub, comp, False, start + 50)
    assert value(hub, "plant/chiller-1/starts_per_hour") == 3
    assert value(hub, "plant/chiller-1/short_cycling") is True
    assert engine.alarms[f"{comp}:short_cycling"].state == "active"
    put(hub, comp, False, 3700)  # the start at 100 s is more than an hour old
    assert value(hub, "plant/chiller-1/starts_per_hour") == 2
    assert value(hub, "plant/chiller-1/short_cycling") is False
    assert engine.alarms[f"{comp}:short_cycling"].state == "returned"


def test_simultaneous_heating_and_cooling_on_a_zone():
    zone = Zone("zone-1", heating="plant/vav-1/reheat_valve", cooling="plant/ahu-1/compressor", heating_threshold=5.0)
    clock, hub, derived, _ = setup(DerivedSettings(zones=(zone,)))
    out = "plant/zone-1/simultaneous_heat_cool"
    put(hub, "plant/vav-1/reheat_valve", 40.0, 0, "%")
    assert value(hub, out) is False
    put(hub, "plant/ahu-1/compressor", True, 1)
    assert value(hub, out) is True and point_of(hub, out).ts == T0 + 1
    put(hub, "plant/vav-1/reheat_valve", 3.0, 2, "%")  # under the threshold: not heating
    assert value(hub, out) is False


def test_running_outside_the_schedule():
    schedule = Schedule.parse("mon-fri 06:00-20:00; sat 08:00-12:00")
    assert schedule.contains(datetime(2024, 1, 6, 9, 30, tzinfo=timezone.utc))  # Saturday
    assert not schedule.contains(datetime(2024, 1, 7, 9, 30, tzinfo=timezone.utc))  # Sunday
    with pytest.raises(ValueError):
        Schedule.parse("mon-fri 20:00-06:00")
    settings = DerivedSettings(schedules={"chiller-1": schedule}, timezone="UTC", running_kw=1.0)
    clock, hub, derived, _ = setup(settings)
    out = "plant/chiller-1/outside_schedule"
    put(hub, POWER, 50.0, 5 * 3600, "kW")  # Monday 05:00, running
    assert value(hub, out) is True
    put(hub, POWER, 50.0, 6 * 3600, "kW")  # 06:00: scheduled
    assert value(hub, out) is False
    put(hub, POWER, 0.2, 21 * 3600, "kW")  # 21:00 but off
    assert value(hub, out) is False
    assert hub.get("plant/ahu-1/outside_schedule") is None  # no schedule, no point


def test_simulator_settings_schedule_every_unit():
    settings = simulator_settings(["chiller-1", "crac-1", "ahu-1"])
    assert set(settings.schedules) == {"chiller-1", "crac-1", "ahu-1"}
    assert settings.max_starts_per_hour == 6.0  # the usual limit: the simulator no longer short-cycles (issue 19)
    with pytest.raises(ValueError):
        DerivedSettings(forecast_minutes=())


# -- end to end -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_client_sees_derived_points_after_publishes():
    from twisted.internet import reactor

    from hvac_push.testing import connect
    from tests.conftest import start_server, stop_server
    from tests.helpers import within

    server = await start_server()
    derived = DerivedPoints(server.hub, reactor, DerivedSettings(), alarms=server.service.alarms)
    try:
        client = await within(5, connect(reactor, server.port, "/ws?points=plant/chiller-1/%23"))
        await within(5, client.next("snapshot"))
        now = reactor.seconds()
        server.hub.publish(Sample(POWER, 360.0, "kW", now))
        server.hub.publish(Sample(POWER, 360.0, "kW", now + 10))  # 360 kW x 10 s = 1 kWh
        while True:
            message = await within(5, client.next("update"))
            point = message["points"].get("plant/chiller-1/energy_kwh")
            if point is not None and point["value"] > 0:
                break
        assert point["value"] == pytest.approx(1.0) and point["unit"] == "kWh"
        client.sendClose()
        await within(5, client.closed)
    finally:
        derived.close()
        await stop_server(server)


@pytest.mark.parametrize("flag", [True, False])
def test_the_derived_flag_wires_derived_points_next_to_the_simulator(flag):
    from twisted.internet.testing import MemoryReactorClock

    from hvac_push.ops.tap import Options, makeService

    config = Options()
    config.parseOptions(["--sim-units", "3"] + (["--derived"] if flag else []))
    service = makeService(config, reactor=MemoryReactorClock())
    service.hub.publish(Sample(POWER, 60.0, "kW", 0.0))
    service.hub.publish(Sample(POWER, 60.0, "kW", 60.0))
    assert (value(service.hub, "plant/chiller-1/energy_kwh") == pytest.approx(1.0)) is flag


def test_a_replaced_derived_points_leaves_no_alarm_stuck():
    settings = DerivedSettings(predict_within_min=10.0, max_starts_per_hour=1)
    clock, hub, derived, engine = setup(settings, alarms=True)
    assert engine is not None
    hub.configure(SUPPLY, PointMeta(limits=AlarmLimits(high=9.0, low=4.0)))
    raised = []
    engine.add_listener(lambda seq, alarm: raised.append((alarm.point, alarm.kind, alarm.state)))
    for i in range(0, 120):
        put(hub, SUPPLY, 7.0 + 0.01 * i, 5 * i, "°C")
    for i, on in enumerate([False, True, False, True, False, True]):
        put(hub, "plant/chiller-1/compressor", on, 10 * i)
    assert (SUPPLY, "predicted", "active") in raised
    assert ("plant/chiller-1/compressor", "short_cycling", "active") in raised
    # Replaced: the successor starts without a trend or start history, so it holds neither alarm;
    # each is cleared exactly once (short_cycling by the successor itself, predicted on release).
    derived.close()
    before = len(raised)
    successor = DerivedPoints(hub, clock, settings, alarms=engine)
    derived.release_alarms(successor)
    assert sorted(raised[before:]) == [
        ("plant/chiller-1/compressor", "short_cycling", "returned"),
        (SUPPLY, "predicted", "returned"),
    ]
    # Removed (no successor): cleared as well.
    for i, on in enumerate([True, False, True, False, True]):
        put(hub, "plant/chiller-1/compressor", on, 100 + 10 * i)
    assert raised[-1] == ("plant/chiller-1/compressor", "short_cycling", "active")
    successor.close()
    successor.release_alarms(None)
    assert raised[-1] == ("plant/chiller-1/compressor", "short_cycling", "returned")
