"""hvac_push.analytics (staleness, alarms, history) and hvac_push.transport.cov_filter, on a fake clock: point
status, alarms, history and change-of-value filters."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from hvac_push.analytics.alarms import AlarmEngine, UnknownAlarm
from hvac_push.transport.cov_filter import CovFilter
from hvac_push.analytics.history import History
from hvac_push.core.hub import Hub
from hvac_push.core.points import EVERYTHING, AlarmLimits, CovRule, Pattern, PointMeta, Sample
from hvac_push.analytics.staleness import StalenessWatcher


def setup():
    clock = Clock()
    clock.advance(1000)
    hub = Hub(epoch="E", clock=clock.seconds)
    return clock, hub


def temp(hub, clock, value, point="p/u/t"):
    hub.publish(Sample(point, float(value), "°C", clock.seconds()))


# -- status ---------------------------------------------------------------------


def test_a_point_goes_stale_after_three_expected_intervals_of_silence_and_recovers():
    clock, hub = setup()
    hub.configure("p/u/t", PointMeta(expected_interval=2.0))
    watcher = StalenessWatcher(hub, clock, default_interval=60.0, check_every=0.5)
    watcher.start()
    temp(hub, clock, 20)
    clock.pump([0.5] * 11)  # 5.5 s < 6 s
    assert hub.get("p/u/t").status == "ok"
    version = hub.version
    clock.pump([0.5] * 2)  # 6.5 s > 3 x 2 s
    assert hub.get("p/u/t").status == "stale" and hub.version == version + 1
    temp(hub, clock, 21)
    assert hub.get("p/u/t").status == "ok"
    watcher.stop()


def test_points_without_configuration_use_the_default_interval():
    clock, hub = setup()
    watcher = StalenessWatcher(hub, clock, default_interval=10.0, check_every=1.0)
    watcher.start()
    temp(hub, clock, 20)
    clock.pump([1.0] * 29)
    assert hub.get("p/u/t").status == "ok"
    clock.pump([1.0] * 2)
    assert hub.get("p/u/t").status == "stale"
    watcher.stop()


# -- alarms ---------------------------------------------------------------------


def alarm_setup(**limits):
    clock, hub = setup()
    engine = AlarmEngine(hub, clock, ring_size=5)
    engine.set_limits("p/u/t", AlarmLimits(**limits))
    heard = []
    engine.add_listener(lambda seq, alarm: heard.append((seq, alarm.kind, alarm.state)))
    return clock, hub, engine, heard


def test_high_alarm_needs_the_delay_and_clears_only_beyond_the_deadband():
    clock, hub, engine, heard = alarm_setup(high=25.0, deadband=1.0, delay=10.0, severity="critical")
    temp(hub, clock, 26)
    clock.advance(5)
    temp(hub, clock, 24)  # back inside before the delay: nothing
    clock.advance(20)
    assert heard == []
    temp(hub, clock, 27)
    clock.advance(9.9)
    assert heard == []
    temp(hub, clock, 28)
    clock.advance(0.2)
    assert heard == [(1, "high", "active")]
    alarm = engine.alarms["p/u/t:high"]
    assert alarm.value == 28.0 and alarm.limit == 25.0 and alarm.severity == "critical"
    temp(hub, clock, 24.5)  # inside the limit but within the deadband: still active
    assert engine.alarms["p/u/t:high"].state == "active"
    temp(hub, clock, 23.9)
    assert heard[-1] == (2, "high", "returned")


def test_ack_moves_active_to_acknowledged_and_returned_to_normal():
    clock, hub, engine, heard = alarm_setup(low=5.0)
    temp(hub, clock, 4)
    engine.ack("p/u/t:low")
    temp(hub, clock, 6)
    assert [h[2] for h in heard] == ["active", "acknowledged", "normal"]
    assert engine.alarms == {}
    temp(hub, clock, 3)
    temp(hub, clock, 7)
    assert engine.alarms["p/u/t:low"].state == "returned"
    engine.ack("p/u/t:low")
    assert engine.alarms == {} and [h[0] for h in heard] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(UnknownAlarm):
        engine.ack("p/u/t:low")


def test_a_returned_alarm_that_comes_back_is_active_again():
    clock, hub, engine, heard = alarm_setup(high=25.0)
    temp(hub, clock, 26)
    temp(hub, clock, 20)
    temp(hub, clock, 26)
    assert [h[2] for h in heard] == ["active", "returned", "active"]


def test_stale_and_fault_points_raise_status_alarms():
    clock, hub, engine, heard = alarm_setup()
    temp(hub, clock, 20)
    hub.set_status(["p/u/t"], "fault")
    hub.set_status(["p/u/t"], "stale")
    temp(hub, clock, 21)
    assert heard == [(1, "fault", "active"), (2, "stale", "active"), (3, "fault", "returned"), (4, "stale", "returned")]


def test_replay_returns_what_came_after_a_seq_or_none_beyond_the_ring():
    clock, hub, engine, heard = alarm_setup(high=25.0)
    for _ in range(4):
        temp(hub, clock, 26)  # active
        engine.ack("p/u/t:high")  # acknowledged
        temp(hub, clock, 20)  # normal
    assert engine.seq == 12 and [s for s, _ in engine.ring] == [8, 9, 10, 11, 12]
    assert [seq for seq, _ in engine.replay(9)] == [10, 11, 12]
    assert engine.replay(12) == []
    assert [seq for seq, _ in engine.replay(7)] == [8, 9, 10, 11, 12]
    assert engine.replay(6) is None


def test_configured_limits_apply_and_api_limits_override_them():
    clock, hub = setup()
    hub.configure("p/u/t", PointMeta(limits=AlarmLimits(high=30.0)))
    engine = AlarmEngine(hub, clock)
    temp(hub, clock, 29)
    assert engine.alarms == {}
    engine.set_limits("p/u/t", AlarmLimits(high=28.0))
    assert engine.alarms["p/u/t:high"].state == "active"
    engine.set_limits("p/u/t", None)  # back to the configured 30
    temp(hub, clock, 29.5)
    assert engine.alarms["p/u/t:high"].state == "returned"
    temp(hub, clock, 31)
    assert engine.alarms["p/u/t:high"].state == "active" and engine.alarms["p/u/t:high"].limit == 30.0


# -- history --------------------------------------------------------------------


def test_history_keeps_a_time_window_and_a_count_bound():
    clock, hub = setup()
    history = History(hub, window=60.0, max_samples=50)
    for i in range(100):
        temp(hub, clock, i)
        clock.advance(1)
    samples = history.samples("p/u/t", since=0, now=clock.seconds())
    assert len(samples) == 50 and samples[-1] == (1099.0, 99.0)
    assert history.samples("p/u/t", since=1090, now=clock.seconds())[0] == (1090.0, 90.0)
    short = History(hub, window=10.0, max_samples=1000)
    for i in range(30):
        temp(hub, clock, i)
        clock.advance(1)
    assert [v for _, v in short.samples("p/u/t", 0, clock.seconds())] == [float(i) for i in range(20, 30)]


def test_status_changes_are_not_history_samples():
    clock, hub = setup()
    history = History(hub)
    temp(hub, clock, 1)
    hub.set_status(["p/u/t"], "fault")
    assert len(history.samples("p/u/t", 0, clock.seconds())) == 1


# -- change-of-value filters ----------------------------------------------------


def cov_run(rule, steps):
    """Publish (dt, value) steps; return the values a filtered client is sent."""
    clock, hub = setup()
    cov = CovFilter()
    cov.set_rule([Pattern.parse("#")], rule)
    temp(hub, clock, 20.0)
    cov.record(hub.points(), clock.seconds())
    since = hub.version
    sent = []
    for dt, value in steps:
        clock.advance(dt)
        if value is not None:
            temp(hub, clock, value)
        sent += [p.value for p in cov.select(hub, since, EVERYTHING, clock.seconds())]
        since = hub.version
    return sent


def test_deadband_sends_only_moves_larger_than_the_band_from_the_last_value_sent():
    steps = [(1, 20.3), (1, 20.4), (1, 20.6), (1, 20.2), (1, 19.9), (1, 19.5)]
    assert cov_run(CovRule(deadband=0.5), steps) == [20.6, 19.9]


def test_min_interval_holds_back_and_then_sends_the_newest_value():
    steps = [(0.1, 21.0), (0.1, 22.0), (0.1, 23.0), (0.8, None), (0.1, 24.0)]
    assert cov_run(CovRule(min_interval=1.0), steps) == [23.0]


def test_max_interval_sends_a_small_change_once_it_is_due():
    steps = [(1, 20.1), (1, 20.2), (1, None), (1, None), (1, 20.25)]
    # 20.1 and 20.2 are inside the band; at t=3 the newest (20.2) is due; 20.25 is again too soon.
    assert cov_run(CovRule(deadband=1.0, max_interval=3.0), steps) == [20.2]


# -- points that never had a value ------------------------------------------------


def test_a_declared_point_that_never_reports_goes_stale_and_down_raises_an_alarm():
    clock, hub = setup()
    hub.configure("p/u/t", PointMeta(expected_interval=2.0, limits=AlarmLimits(high=25.0)))
    engine = AlarmEngine(hub, clock)
    heard = []
    engine.add_listener(lambda seq, alarm: heard.append((alarm.kind, alarm.state, alarm.value)))
    history = History(hub)
    watcher = StalenessWatcher(hub, clock, default_interval=60.0, check_every=0.5)
    watcher.start()
    hub.declare([("p/u/t", "°C")])
    clock.pump([0.5] * 13)  # 6.5 s > 3 x 2 s without a first reading
    point = hub.get("p/u/t")
    assert (point.value, point.status) == (None, "stale")
    hub.set_status(["p/u/t"], "down")
    assert heard == [("stale", "active", None), ("stale", "returned", None), ("down", "active", None)]
    assert "p/u/t" not in history and history.samples("p/u/t", 0, clock.seconds()) == []
    temp(hub, clock, 30)  # the first reading: ok, and a limit alarm with it
    assert hub.get("p/u/t").status == "ok"
    assert heard[-2:] == [("down", "returned", 30.0), ("high", "active", 30.0)]
    assert history.samples("p/u/t", 0, clock.seconds()) == [(clock.seconds(), 30.0)]
    watcher.stop()


def test_change_of_value_filters_send_the_first_value_whatever_the_deadband():
    clock, hub = setup()
    hub.declare([("p/u/t", "°C")])
    cov = CovFilter()
    cov.set_rule([Pattern.parse("#")], CovRule(deadband=5.0))
    cov.record(hub.points(), clock.seconds())
    clock.advance(1)
    temp(hub, clock, 20.0)
    assert [p.value for p in cov.select(hub, 1, EVERYTHING, clock.seconds())] == [20.0]
