"""hvac_push.core.hub: versions, changed_since, ordering, validation, listeners and status changes."""

from hvac_push.core.hub import Hub
from hvac_push.core.points import Pattern, Sample, Subscription


def make_hub():
    return Hub(epoch="e1", clock=lambda: 1000.0)


def test_every_accepted_change_gets_the_next_hub_version():
    hub = make_hub()
    a = hub.publish(Sample("p/u/a", 1.0, "°C", 10.0))
    b = hub.publish(Sample("p/u/b", 2.0, "°C", 10.0))
    a2 = hub.publish(Sample("p/u/a", 1.5, "°C", 11.0))
    assert (a.version, b.version, a2.version) == (1, 2, 3)
    assert hub.version == 3
    assert hub.get("p/u/a").value == 1.5


def test_changed_since_returns_only_newer_points_oldest_first():
    hub = make_hub()
    for i, name in enumerate("abcd"):
        hub.publish(Sample(f"p/u/{name}", i, ts=float(i)))
    hub.publish(Sample("p/u/a", 10, ts=20.0))
    assert [p.point_id for p in hub.changed_since(2)] == ["p/u/c", "p/u/d", "p/u/a"]
    assert hub.changed_since(5) == []
    assert [p.point_id for p in hub.changed_since(0)] == ["p/u/b", "p/u/c", "p/u/d", "p/u/a"]


def test_changed_since_filters_by_subscription():
    hub = make_hub()
    hub.publish(Sample("p/chiller/t", 1, ts=1.0))
    hub.publish(Sample("p/ahu/t", 1, ts=1.0))
    hub.publish(Sample("p/ahu/fan", 1, ts=1.0))
    sub = Subscription.of([Pattern.parse("p/+/t")])
    assert [p.point_id for p in hub.changed_since(0, sub)] == ["p/chiller/t", "p/ahu/t"]


def test_older_samples_never_overwrite_newer_ones():
    hub = make_hub()
    hub.publish(Sample("p/u/a", 2.0, ts=20.0))
    assert hub.publish(Sample("p/u/a", 1.0, ts=10.0)) is None
    assert hub.get("p/u/a").value == 2.0 and hub.version == 1


def test_identical_repeat_is_not_a_change_but_a_fresh_reading_is():
    hub = make_hub()
    hub.publish(Sample("p/u/a", 2.0, ts=20.0))
    assert hub.publish(Sample("p/u/a", 2.0, ts=20.0)) is None
    assert hub.publish(Sample("p/u/a", 2.0, ts=21.0)).version == 2


def test_invalid_samples_are_rejected_and_counted_without_raising():
    hub = make_hub()
    stored = hub.publish_many(
        [
            Sample("bad id", 1),
            Sample("p/u/a", float("nan")),
            Sample("p/u/b", 1, status="weird"),  # type: ignore[arg-type]  # outside Status on purpose
            Sample("p/u/c", 3),
        ]
    )
    assert stored == 1 and hub.rejected == 3 and len(hub) == 1


def test_missing_ts_is_stamped_by_the_hub_clock():
    hub = make_hub()
    assert hub.publish(Sample("p/u/a", 1)).ts == 1000.0


def test_listeners_hear_once_per_batch_and_a_failing_listener_is_contained():
    hub = make_hub()
    calls = []
    hub.add_listener(lambda: 1 / 0)
    hub.add_listener(lambda: calls.append(hub.version))
    hub.publish_many([Sample("p/u/a", 1, ts=1.0), Sample("p/u/b", 1, ts=1.0)])
    assert calls == [2]


def test_each_hub_has_its_own_random_epoch():
    assert Hub().epoch != Hub().epoch


def test_set_status_keeps_value_and_ts_and_is_a_change():
    hub = make_hub()
    hub.publish(Sample("p/u/a", 2.0, "°C", ts=20.0))
    assert hub.set_status(["p/u/a", "p/u/unknown"], "fault") == 1
    point = hub.get("p/u/a")
    assert (point.value, point.ts, point.status, point.version) == (2.0, 20.0, "fault", 2)
    assert hub.set_status(["p/u/a"], "fault") == 0
    assert [p.point_id for p in hub.changed_since(1)] == ["p/u/a"]


def test_a_listener_that_publishes_is_applied_after_every_listener_saw_the_change():
    """Data never flows back into the hub from inside a notification (derived points do this)."""
    hub = Hub(epoch="E")
    seen: list[tuple[str, int, int]] = []

    def deriving() -> None:
        seen.append(("deriving", hub.version, len(hub)))
        if hub.get("s/u/derived") is None:
            assert hub.publish_many([Sample("s/u/derived", 2.0, ts=1.0)]) == 0  # queued, not applied
            assert hub.get("s/u/derived") is None

    def watching() -> None:
        seen.append(("watching", hub.version, len(hub)))

    hub.add_listener(deriving)
    hub.add_listener(watching)
    hub.publish(Sample("s/u/input", 1.0, ts=1.0))
    # Both listeners saw version 1 before the derived write; then both saw version 2.
    assert seen == [("deriving", 1, 1), ("watching", 1, 1), ("deriving", 2, 2), ("watching", 2, 2)]
    derived = hub.get("s/u/derived")
    assert derived is not None and derived.version == 2


def test_the_same_reading_with_another_status_is_a_change_and_the_exact_same_one_is_not():
    hub = Hub(epoch="E")
    hub.publish(Sample("s/u/p", 1.0, "°C", 5.0))
    assert hub.publish(Sample("s/u/p", 1.0, "°C", 5.0)) is None  # a replay changes nothing
    marked = hub.publish(Sample("s/u/p", 1.0, "°C", 5.0, "stale"))
    assert marked is not None and marked.status == "stale" and hub.version == 2


def test_declared_points_exist_without_a_value_until_their_first_sample():
    hub = make_hub()
    heard = []
    hub.add_listener(lambda: heard.append(hub.version))
    assert hub.declare([("p/u/a", "°C"), ("p/u/b", "")]) == 2
    assert heard == [2]
    a = hub.get("p/u/a")
    assert (a.value, a.unit, a.ts, a.status, a.version) == (None, "°C", 1000.0, "waiting", 1)
    # Declaring again changes nothing, and never overwrites a value.
    hub.publish(Sample("p/u/b", 3, ts=1.0))  # older than the declaration: still the first reading
    assert hub.declare([("p/u/a", "°C"), ("p/u/b", "")]) == 0
    assert hub.get("p/u/b").value == 3 and hub.get("p/u/b").status == "ok"
    assert hub.status_counts() == {"ok": 1, "stale": 0, "fault": 0, "down": 0, "waiting": 1}


def test_a_point_without_a_value_is_never_ok():
    hub = make_hub()
    hub.declare([("p/u/a", "")])
    assert hub.set_status(["p/u/a"], "down") == 1
    assert (hub.get("p/u/a").value, hub.get("p/u/a").status) == (None, "down")
    assert hub.set_status(["p/u/a"], "ok") == 1  # the source is back, the reading not yet
    assert hub.get("p/u/a").status == "waiting"
    hub.publish(Sample("p/u/a", 1.5, ts=2000.0))
    assert hub.set_status(["p/u/a"], "waiting") == 0  # it has a value now
    assert hub.get("p/u/a").status == "ok"


def test_samples_cannot_claim_to_be_waiting():
    hub = make_hub()
    assert hub.publish(Sample("p/u/a", 1, ts=1.0, status="waiting")) is None
    assert hub.publish(Sample("p/u/a", 1, ts=1.0, status="down")).status == "down"
    assert hub.rejected == 1


# -- behaviours mutation testing found unpinned (scripts/mutation, docs/testing.md) ------------------


def test_a_publish_or_status_change_made_by_a_listener_is_applied_after_the_notification():
    hub = Hub(epoch="E")
    hub.declare([("s/u/waiting", "")])
    inside: list[object] = []  # what the calls returned inside the listener (the hub contains its failures)

    def listener() -> None:
        if hub.get("s/u/echo") is None:
            inside.append(hub.publish(Sample("s/u/echo", 2.0, ts=1.0)))
            inside.append(hub.set_status(["s/u/input"], "stale"))
            inside.append(hub.publish_many([Sample("s/u/echo2", 3.0, ts=1.0)]))
            echo, current = hub.get("s/u/echo"), hub.get("s/u/input")
            inside.append((echo, current.status if current else None))

    hub.add_listener(listener)
    hub.publish(Sample("s/u/input", 1.0, "°C", ts=1.0))
    assert inside == [None, 0, 0, (None, "ok")]  # all queued, nothing applied yet
    echo, marked = hub.get("s/u/echo"), hub.get("s/u/input")
    assert echo is not None and echo.value == 2.0
    assert marked is not None and (marked.status, marked.unit, marked.value) == ("stale", "°C", 1.0)


def test_status_changes_and_declarations_go_on_past_points_they_skip_and_count_what_changed():
    hub = make_hub()
    hub.publish_many([Sample("s/u/a", 1.0, ts=1.0), Sample("s/u/b", 1.0, ts=1.0)])
    hub.declare([("s/u/w", "kW")])
    # unknown, already stale, has a value (not waiting): skipped; the rest change.
    assert hub.set_status(["s/u/none", "s/u/a", "s/u/b"], "stale") == 2
    assert hub.set_status(["s/u/a", "s/u/b", "s/u/w"], "fault") == 3
    assert hub.set_status(["s/u/a", "s/u/w"], "waiting") == 1
    assert [hub.get(p).status for p in ("s/u/a", "s/u/b", "s/u/w")] == ["fault", "fault", "waiting"]
    hub.set_status(["s/u/b"], "ok")
    assert hub.set_status(["s/u/a", "s/u/b"], "fault") == 1  # a is fault already; b still changes
    assert hub.declare([("s/u/a", ""), ("s/u/x", "°C"), ("t/v/y", "")]) == 2
    declared = hub.get("s/u/x")
    assert declared is not None and declared.point_id == "s/u/x" and declared.unit == "°C"
    assert [p.point_id for p in hub.points(Subscription.of([Pattern.parse("t/v/#")]))] == ["t/v/y"]
    assert hub.publish_many([Sample("s/u/a", 5.0, ts=2.0), Sample("s/u/b", 5.0, ts=2.0)]) == 2
    assert hub.publish_many([Sample("s/u/a", 5.0, ts=2.0)]) == 0
    assert hub.status_counts()["fault"] == 0 and hub.status_counts()["ok"] == 2


def test_units_of_up_to_32_characters_are_accepted_and_others_rejected_without_raising():
    hub = make_hub()
    assert hub.publish(Sample("s/u/a", 1.0, "x" * 32, ts=1.0)) is not None
    assert hub.publish(Sample("s/u/b", 1.0, "x" * 33, ts=1.0)) is None
    assert hub.publish(Sample("s/u/c", 1.0, 5, ts=1.0)) is None  # type: ignore[arg-type]
    assert hub.rejected == 2
