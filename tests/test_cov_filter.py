"""hvac_push.transport.cov_filter: the change-of-value rule at its edges, on plain values."""

from __future__ import annotations

from hvac_push.core.hub import Hub
from hvac_push.core.points import EVERYTHING, CovRule, Pattern, Sample
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
