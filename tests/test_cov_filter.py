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
