"""hvac_push.transport.cov_filter: the change-of-value rule at its edges, on plain values."""

from __future__ import annotations

from hvac_push.core.hub import Hub
from hvac_push.core.points import EVERYTHING, CovRule, Pattern, Sample, Subscription
from hvac_push.transport.cov_filter import CovFilter

POINT = "s/u/temp"


def setup(rule: CovRule) -> tuple[Hub, CovFilter]:
    hub = Hub(epoch="E")
    cov = CovFilter()
    cov.set_rule([Pattern.parse("s/u/#")], rule)
    hub.publish(Sample(POINT, 20.0, "°C", 1.0))
    assert [p.value for p in cov.select(hub, 0, EVERYTHING, now=1.0)] == [20.0]  # the first value always goes
    return hub, cov


def test_a_move_exactly_on_the_deadband_is_not_sent_and_one_just_past_it_is():
    hub, cov = setup(CovRule(deadband=0.5))
    since = hub.version
    hub.publish(Sample(POINT, 20.5, "°C", 2.0))  # exactly 0.5 away (exact in binary floating point)
    assert cov.select(hub, since, EVERYTHING, now=2.0) == []
    since = hub.version
    hub.publish(Sample(POINT, 20.5 + 2**-20, "°C", 3.0))  # more than the deadband from the last sent (20.0)
    assert [p.value for p in cov.select(hub, since, EVERYTHING, now=3.0)] == [20.5 + 2**-20]


def test_a_move_back_within_the_deadband_of_the_last_sent_value_is_not_sent():
    hub, cov = setup(CovRule(deadband=1.0))
    since = hub.version
    hub.publish(Sample(POINT, 19.25, "°C", 2.0))
    assert cov.select(hub, since, EVERYTHING, now=2.0) == []


def test_a_change_held_back_by_the_minimum_interval_is_sent_once_it_passed_without_a_new_change():
    hub, cov = setup(CovRule(min_interval=5.0))
    since = hub.version
    hub.publish(Sample(POINT, 21.0, "°C", 2.0))
    assert cov.select(hub, since, EVERYTHING, now=2.0) == []  # too soon: held, not dropped
    since = hub.version
    assert cov.select(hub, since, EVERYTHING, now=4.0) == []  # nothing new, still too soon
    sent = cov.select(hub, since, EVERYTHING, now=6.0)  # nothing changed since, but the held value is due
    assert [(p.point_id, p.value) for p in sent] == [(POINT, 21.0)]
    assert cov.select(hub, since, EVERYTHING, now=12.0) == []  # sent once, not again


def test_a_held_point_the_client_no_longer_subscribes_to_is_not_sent():
    hub, cov = setup(CovRule(min_interval=5.0))
    since = hub.version
    hub.publish(Sample(POINT, 21.0, "°C", 2.0))
    assert cov.select(hub, since, EVERYTHING, now=2.0) == []
    elsewhere = Subscription.of([Pattern.parse("s/other/#")])
    assert cov.select(hub, hub.version, elsewhere, now=6.0) == []


def test_clearing_a_rule_sends_every_change_again():
    hub, cov = setup(CovRule(deadband=5.0))
    cov.set_rule([Pattern.parse("s/u/#")], None)
    assert cov.rules == {}
    since = hub.version
    hub.publish(Sample(POINT, 20.1, "°C", 2.0))
    assert [p.value for p in cov.select(hub, since, EVERYTHING, now=2.0)] == [20.1]
    cov.set_rule([Pattern.parse("s/never/#")], None)  # clearing a rule that was never set is no error


def sent_values(cov: CovFilter, hub: Hub, since: int, now: float) -> list[object]:
    return [p.value for p in cov.select(hub, since, EVERYTHING, now=now)]


def test_a_change_of_status_is_sent_even_within_the_deadband():
    hub, cov = setup(CovRule(deadband=5.0))
    since = hub.version
    hub.publish(Sample(POINT, 20.1, "°C", 2.0, status="fault"))
    assert [(p.value, p.status) for p in cov.select(hub, since, EVERYTHING, now=2.0)] == [(20.1, "fault")]


def test_the_maximum_interval_resends_a_held_small_move_exactly_when_it_runs_out():
    hub, cov = setup(CovRule(deadband=5.0, max_interval=10.0))
    since = hub.version
    hub.publish(Sample(POINT, 20.1, "°C", 2.0))  # within the deadband: held, not dropped
    assert sent_values(cov, hub, since, 2.0) == []
    since = hub.version
    assert sent_values(cov, hub, since, 10.9) == []  # 9.9 s after the last send
    assert sent_values(cov, hub, since, 11.0) == [20.1]  # 10 s after it (sent at 1.0): due, with no new change


def test_only_subscribed_points_are_selected():
    hub, cov = setup(CovRule(deadband=0.0))
    since = hub.version
    hub.publish(Sample("s/other/temp", 5.0, "°C", 2.0))
    hub.publish(Sample(POINT, 21.0, "°C", 2.0))
    mine = Subscription.of([Pattern.parse("s/u/#")])
    assert [p.point_id for p in cov.select(hub, since, mine, now=2.0)] == [POINT]


def test_points_are_sent_in_version_order_held_ones_included():
    hub, cov = setup(CovRule(min_interval=5.0))
    since = hub.version
    hub.publish(Sample(POINT, 21.0, "°C", 2.0))  # held by the minimum interval
    assert sent_values(cov, hub, since, 2.0) == []
    since = hub.version
    hub.publish(Sample("s/v/temp", 9.0, "°C", 6.0))  # newer, no rule for it
    assert [p.point_id for p in cov.select(hub, since, EVERYTHING, now=6.0)] == [POINT, "s/v/temp"]


def test_moves_to_and_between_non_numbers_are_judged_by_equality():
    hub, cov = setup(CovRule(deadband=5.0))
    steps: list[tuple[float | bool | str, bool]] = [
        ("fault", True),  # a number to a string: sent
        ("fault", False),  # the same string
        (True, True),  # a string to a bool
        (False, True),  # a bool flip, whatever the deadband
        (False, False),
        (20.0, True),  # back to a number
    ]
    for ts, (value, expected) in enumerate(steps, start=2):
        since = hub.version
        hub.publish(Sample(POINT, value, "", float(ts)))
        assert sent_values(cov, hub, since, float(ts)) == ([value] if expected else []), (value, expected)


def test_a_repeated_string_or_bool_is_not_resent_even_under_a_deadband_below_one():
    hub, cov = setup(CovRule(deadband=0.5))
    values: tuple[str | bool, ...] = ("fault", True)
    for ts, value in enumerate(values, start=2):
        since = hub.version
        hub.publish(Sample(POINT, value, "", float(ts)))
        assert sent_values(cov, hub, since, float(ts)) == [value]
        since = hub.version
        hub.publish(Sample(POINT, value, "", float(ts) + 0.5))  # the same value again: it did not move
        assert sent_values(cov, hub, since, float(ts) + 0.5) == []


def test_a_held_value_sent_in_a_snapshot_meanwhile_is_no_longer_held():
    """Found unpinned by mutation testing: a re-subscribe's snapshot carries the held value, so it is not sent twice."""
    hub, cov = setup(CovRule(min_interval=5.0))
    since = hub.version
    hub.publish(Sample(POINT, 21.0, "°C", 2.0))
    assert cov.select(hub, since, EVERYTHING, now=2.0) == []  # held
    assert cov.held
    point = hub.get(POINT)
    assert point is not None
    cov.record([point], now=3.0)  # the snapshot sent it
    assert not cov.held
    assert cov.select(hub, hub.version, EVERYTHING, now=9.0) == []
