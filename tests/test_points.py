"""hvac_push.core.points: patterns, point ids, values and subscriptions."""

import pytest

from hvac_push.core.points import EVERYTHING, InvalidPoint, Pattern, Subscription, check_point_id, check_value


@pytest.mark.parametrize(
    "pattern, point, expected",
    [
        ("plant/+/supply_temp", "plant/chiller-1/supply_temp", True),
        ("plant/+/supply_temp", "plant/chiller-1/return_temp", False),
        ("plant/chiller-1/#", "plant/chiller-1/power", True),
        ("plant/chiller-1/#", "plant/chiller-2/power", False),
        ("#", "any/unit/point", True),
        ("plant/#", "plant/ahu-1/fan_speed", True),
        ("+/+/+", "a/b/c", True),
        ("plant/ahu-1/fan_speed", "plant/ahu-1/fan_speed", True),
        ("plant/ahu-1/fan_speed", "plant/ahu-1/fan_speed.x", False),
    ],
)
def test_pattern_matches_levels_like_mqtt(pattern, point, expected):
    assert Pattern.parse(pattern).matches(point) is expected


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b", "a/b/c/d", "a/b+/c", "a//c", 5, "a/b/" + "x" * 300])
def test_bad_patterns_are_refused_with_a_reason(bad):
    with pytest.raises(InvalidPoint):
        Pattern.parse(bad)


@pytest.mark.parametrize("bad", ["a/b", "a/b/c/d", "a/b c/d", "/a/b", "a/+/c", "a/#/c", ""])
def test_point_ids_must_be_three_clean_levels(bad):
    with pytest.raises(InvalidPoint):
        check_point_id(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, [1], {"a": 1}, 2**60, "x" * 1000])
def test_values_must_be_json_safe_scalars(bad):
    with pytest.raises(InvalidPoint):
        check_value(bad)


def test_subscriptions_with_equal_patterns_are_one_object():
    a = Subscription.of([Pattern.parse("a/+/c"), Pattern.parse("x/y/#")])
    b = Subscription.of([Pattern.parse("x/y/#"), Pattern.parse("a/+/c")])
    assert a is b
    assert a.matches("a/b/c") and a.matches("x/y/z") and not a.matches("a/b/d")
    assert EVERYTHING.everything and EVERYTHING.matches("q/r/s")


def test_pattern_limits_and_levels_after_a_plus_are_checked():
    """Mutation testing found these unpinned: the four-level limit, each refusal's reason, a bad level after C{+}."""
    assert Pattern.parse("a/b/c/#").levels == ("a", "b", "c", "#")
    for bad, reason in [("", "must be a non-empty string"), ("a/b/c/d/#", "too many levels"),
                        ("+/b c/d", "is neither a name"), ("a/#/b", "'#' must be the last level"),
                        ("a/b", "expected three levels")]:
        with pytest.raises(InvalidPoint, match=reason):
            Pattern.parse(bad)


def test_a_subscription_knows_whether_it_takes_everything():
    assert Subscription.of([Pattern.parse("#")]).everything
    assert not Subscription.of([Pattern.parse("a/#"), Pattern.parse("+/+/+")]).everything


def test_only_subscriptions_naming_site_and_unit_in_every_pattern_are_unit_scoped():
    """Built with the constructor, not C{of}: interned subscriptions made earlier would hide a change here.

    (mutmut forks each mutant from a process where every test's subscriptions were interned already.)
    """

    def units(*texts: str) -> frozenset[tuple[str, str]] | None:
        return Subscription(frozenset(Pattern.parse(t) for t in texts)).units

    assert units("s/u1/#", "s/u2/t", "r/u1/p") == frozenset({("s", "u1"), ("s", "u2"), ("r", "u1")})
    for scattered in (["+/u1/t"], ["s/+/t"], ["s/#"], ["#"], ["s/u1/#", "+/u2/t"], ["s/u1/t", "s/+/#"]):
        assert units(*scattered) is None, scattered
