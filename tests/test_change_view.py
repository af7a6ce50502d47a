"""The plant-scale paths give the same answers as the simple ones.

L{ChangeView.changed} (one walk shared by every group, unit buckets) against
C{Hub.changed_since}, and C{Hub.points} with the unit index against a plain
filter over every point, on random histories and subscriptions.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hvac_push.core.hub import Hub
from hvac_push.core.points import Pattern, Sample, Subscription
from hvac_push.transport.rounds import ChangeView

SITES = ("a", "b")
UNITS = ("u1", "u2", "u3")
NAMES = ("t", "p")
IDS = [f"{s}/{u}/{n}" for s in SITES for u in UNITS for n in NAMES]
PATTERNS = sorted(
    {"#", "a/#", "+/u1/t", "a/u1/#", "a/u2/#", "b/u3/#", "a/u1/t", "b/+/p", "a/u2/+", "b/u1/t", "+/+/t", "a/+/#"}
)

histories = st.lists(st.tuples(st.sampled_from(IDS), st.integers(0, 5)), min_size=1, max_size=60)
subscriptions = st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3, unique=True)


def _hub(history: list[tuple[str, int]]) -> Hub:
    hub = Hub(epoch="e", clock=lambda: 0.0)
    for ts, (point_id, value) in enumerate(history):
        hub.publish(Sample(point_id, float(value), ts=float(ts + 1)))
    return hub


def _subscription(texts: list[str]) -> Subscription:
    return Subscription.of(Pattern.parse(t) for t in texts)


@settings(max_examples=300, deadline=None)
@given(histories, st.lists(subscriptions, min_size=1, max_size=4), st.lists(st.integers(0, 70), min_size=1, max_size=5))
def test_the_shared_change_walk_answers_exactly_what_changed_since_answers(history, subs, sinces):
    hub = _hub(history)
    view = ChangeView(hub)
    for since in sinces:
        for texts in subs:
            subscription = _subscription(texts)
            assert view.changed(since, subscription) == hub.changed_since(since, subscription)


@settings(max_examples=300, deadline=None)
@given(histories, subscriptions)
def test_a_snapshot_through_the_unit_index_holds_exactly_the_matching_points_in_version_order(history, texts):
    hub = _hub(history)
    subscription = _subscription(texts)
    expected = [p for p in hub.points() if any(Pattern.parse(t).matches(p.point_id) for t in texts)]
    assert hub.points(subscription) == expected


def test_unit_scoped_subscriptions_are_recognised_and_others_are_not():
    assert _subscription(["a/u1/#", "b/u2/t"]).units == frozenset({("a", "u1"), ("b", "u2")})
    assert _subscription(["a/u1/#", "+/u2/t"]).units is None
    assert _subscription(["a/#"]).units is None
    assert _subscription(["#"]).units is None


def test_a_view_follows_the_hub_as_it_moves_on():
    hub = _hub([("a/u1/t", 1)])
    view = ChangeView(hub)
    unit = _subscription(["a/u1/#"])
    assert [p.version for p in view.changed(0, unit)] == [1]
    hub.publish(Sample("a/u1/t", 2.0, ts=5.0))
    hub.publish(Sample("a/u2/t", 2.0, ts=5.0))
    assert [p.version for p in view.changed(1, unit)] == [2]
    assert [p.point_id for p in view.changed(0, _subscription(["#"]))] == ["a/u1/t", "a/u2/t"]


def test_a_unit_scoped_view_leaves_out_the_change_a_client_already_has_and_merges_units_in_version_order():
    """Mutation testing found these unpinned: C{since} is exclusive, and two units' buckets are interleaved."""
    hub = _hub([("a/u1/t", 1), ("a/u2/t", 1), ("a/u1/p", 1), ("a/u2/p", 1), ("a/u3/t", 1)])
    view = ChangeView(hub)
    two_units = _subscription(["a/u2/#", "a/u1/#"])
    assert [p.version for p in view.changed(0, two_units)] == [1, 2, 3, 4]
    assert [p.version for p in view.changed(2, two_units)] == [3, 4]  # version 2 itself is not resent
    one_unit = _subscription(["a/u1/#"])
    assert [p.point_id for p in view.changed(1, one_unit)] == ["a/u1/p"]
