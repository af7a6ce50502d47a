"""The ISA-18.2 alarm state machine on a fake clock: every transition, delays, latch, shelving,
out of service, floods, and the alarm rate."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from hvac_push.analytics.alarms import AlarmEngine, NotShelvable, UnknownAlarm, UnknownPoint
from hvac_push.core.hub import Hub
from hvac_push.core.points import AlarmLimits, PointMeta, Sample
from hvac_push.ops.plant_file import ConfigError, parse_config

P = "p/u/t"
HIGH = f"{P}:high"


def make(**limits):
    clock = Clock()
    clock.advance(1000)
    hub = Hub(epoch="E", clock=clock.seconds)
    engine = AlarmEngine(hub, clock, max_shelve=3600)
    if limits:
        engine.set_limits(P, AlarmLimits(**limits))
    heard: list[tuple[str, str]] = []
    engine.add_listener(lambda seq, alarm: heard.append((alarm.id, alarm.state)))
    return clock, hub, engine, heard


def temp(hub, clock, value, point=P):
    hub.publish(Sample(point, float(value), "°C", clock.seconds()))


def states(heard, alarm_id=HIGH):
    return [state for found, state in heard if found == alarm_id]


# -- the ISA-18.2 diagram ---------------------------------------------------------


def test_normal_active_acknowledged_normal():
    clock, hub, engine, heard = make(high=25.0)
    temp(hub, clock, 26)
    engine.ack(HIGH, by="ann", comment="seen")
    assert engine.alarms[HIGH].by == "ann" and engine.alarms[HIGH].comment == "seen"
    temp(hub, clock, 20)
    assert states(heard) == ["active", "acknowledged", "normal"] and engine.alarms == {}


def test_active_returned_then_ack_or_again_active():
    clock, hub, engine, heard = make(high=25.0)
    temp(hub, clock, 26)
    temp(hub, clock, 20)
    temp(hub, clock, 27)  # returned -> active: a new occurrence
    temp(hub, clock, 20)
    engine.ack(HIGH)
    assert states(heard) == ["active", "returned", "active", "returned", "normal"]


def test_priority_maps_onto_severity_and_travels_with_the_alarm():
    clock, hub, engine, heard = make(high=25.0, severity="critical", group="chillers", notification_class=7)
    temp(hub, clock, 26)
    alarm = engine.alarms[HIGH]
    assert (alarm.priority, alarm.severity, alarm.group, alarm.notification_class) == ("urgent", "critical", "chillers", 7)


def test_delay_normal_holds_the_alarm_until_the_value_stays_back_inside():
    clock, hub, engine, heard = make(high=25.0, delay=5.0, delay_normal=30.0)
    temp(hub, clock, 26)
    clock.advance(5)
    assert states(heard) == ["active"]
    temp(hub, clock, 20)
    clock.advance(20)
    temp(hub, clock, 26)  # back out before delay_normal ran out: still the same occurrence
    temp(hub, clock, 20)
    clock.advance(29.9)
    assert states(heard) == ["active"]
    clock.advance(0.2)
    assert states(heard) == ["active", "returned"]


def test_without_ack_required_a_cleared_alarm_goes_normal_by_itself():
    clock, hub, engine, heard = make(low=5.0, ack_required=False)
    temp(hub, clock, 4)
    alarm = engine.alarms[f"{P}:low"]
    assert alarm.ack_required is False
    temp(hub, clock, 6)
    assert states(heard, f"{P}:low") == ["active", "normal"] and engine.alarms == {}


def test_a_latched_trip_stays_until_acknowledged_even_after_the_value_returns():
    clock, hub, engine, heard = make(high=25.0, latch=True, ack_required=False)
    temp(hub, clock, 26)
    temp(hub, clock, 20)
    assert engine.alarms[HIGH].state == "latched" and engine.alarms[HIGH].latch
    temp(hub, clock, 20.5)
    engine.ack(HIGH, by="bob")
    assert states(heard) == ["active", "latched", "normal"]
    # Acknowledged while still tripped: it goes normal when the value returns.
    temp(hub, clock, 26)
    engine.ack(HIGH)
    temp(hub, clock, 20)
    assert states(heard)[-3:] == ["active", "acknowledged", "normal"]


# -- shelving -----------------------------------------------------------------------


def test_shelving_hides_an_alarm_until_it_expires_then_it_follows_its_condition():
    clock, hub, engine, heard = make(high=25.0)
    temp(hub, clock, 26)
    shelved = engine.shelve(HIGH, 10, by="ann", comment="sensor being replaced")
    assert shelved.state == "shelved" and shelved.shelved_until == clock.seconds() + 600
    assert (shelved.by, shelved.comment) == ("ann", "sensor being replaced")
    temp(hub, clock, 20)
    temp(hub, clock, 27)  # the condition comes and goes silently
    assert states(heard) == ["active", "shelved"]
    clock.advance(600)
    assert states(heard) == ["active", "shelved", "active"]  # still high: annunciated again
    assert engine.alarms[HIGH].comment == "shelve expired"


def test_shelving_is_capped_and_an_unshelved_cleared_alarm_is_normal():
    clock, hub, engine, heard = make(high=25.0)
    temp(hub, clock, 26)
    assert engine.shelve(HIGH, 24 * 60).shelved_until == clock.seconds() + 3600  # max_shelve
    temp(hub, clock, 20)
    assert engine.unshelve(HIGH, by="ann").state == "normal"
    assert states(heard) == ["active", "shelved", "normal"] and engine.alarms == {}
    clock.advance(3600)  # the cancelled expiry does nothing
    assert states(heard) == ["active", "shelved", "normal"]


def test_shelve_refusals():
    clock, hub, engine, heard = make(high=25.0)
    with pytest.raises(UnknownAlarm):
        engine.shelve(HIGH, 5)
    temp(hub, clock, 26)
    with pytest.raises(NotShelvable):
        engine.shelve(HIGH, 0)
    with pytest.raises(NotShelvable):
        engine.unshelve(HIGH)


# -- out of service -----------------------------------------------------------------


def test_out_of_service_hides_a_point_s_alarms_and_says_so():
    clock, hub, engine, heard = make(high=25.0, low=5.0)
    temp(hub, clock, 26)
    marker = engine.set_out_of_service(P, True, by="tech", comment="calibration")
    assert marker is not None and marker.state == "out_of_service" and marker.by == "tech"
    assert engine.alarms[HIGH].state == "out_of_service"
    temp(hub, clock, 4)  # high clears, low comes on: nothing annunciated
    assert [h for h in heard if h[0] == f"{P}:low"] == []
    engine.set_out_of_service(P, False, by="tech")
    assert f"{P}:out_of_service" not in engine.alarms
    # Back in service: high has cleared (normal), low stands (active, unacknowledged).
    assert states(heard) == ["active", "out_of_service", "normal"]
    assert states(heard, f"{P}:low") == ["active"]
    with pytest.raises(UnknownPoint):
        engine.set_out_of_service("p/u/nothing", True)


# -- floods ---------------------------------------------------------------------------


def test_a_source_going_down_raises_one_alarm_that_lists_its_points():
    clock, hub, engine, heard = make()
    ids = [f"s/boiler/p{i}" for i in range(20)]
    hub.publish_many(Sample(i, 1.0, "", clock.seconds()) for i in ids)
    hub.publish(Sample("s/other/x", 1.0, "", clock.seconds()))
    hub.set_status(["s/other/x"], "fault")  # one point alone: its own alarm
    hub.set_status(ids, "fault")
    source = "s/boiler/_source:source_down"
    assert [h for h in heard] == [("s/other/x:fault", "active"), (source, "active")]
    assert engine.alarms[source].points == tuple(sorted(ids))
    assert engine.counts.suppressed == 20
    # Two points stay broken when the source returns: they annunciate on their own.
    hub.publish_many(Sample(i, 2.0, "", clock.seconds()) for i in ids[2:])
    assert heard[2:] == [(f"{ids[0]}:fault", "active"), (f"{ids[1]}:fault", "active"), (source, "returned")]


def test_alarms_already_listed_are_suppressed_while_the_source_alarm_stands():
    clock, hub, engine, heard = make()
    ids = [f"s/ahu/p{i}" for i in range(4)]
    hub.publish_many(Sample(i, 1.0, "", clock.seconds()) for i in ids)
    hub.set_status(ids[:1], "fault")
    hub.set_status(ids[1:], "fault")
    assert engine.alarms[f"{ids[0]}:fault"].state == "suppressed"
    assert engine.alarms[f"{ids[0]}:fault"].suppressed_by == "s/ahu/_source:source_down"
    hub.publish_many(Sample(i, 2.0, "", clock.seconds()) for i in ids)
    assert f"{ids[0]}:fault" not in engine.alarms  # released with its condition gone: normal
    assert engine.alarms["s/ahu/_source:source_down"].state == "returned"


# -- rates, restore, configuration ------------------------------------------------


def test_the_alarm_rate_counts_annunciations_over_ten_minutes_of_the_engine_clock():
    clock, hub, engine, heard = make(high=25.0, severity="minor")
    for _ in range(3):
        temp(hub, clock, 26)
        temp(hub, clock, 20)
        clock.advance(250)
    assert engine.rate() == 2 and engine.counts.annunciated["medium"] == 3


def test_restored_shelved_alarms_stay_shelved_until_their_end_and_come_back_then():
    clock, hub, engine, heard = make(high=25.0)
    temp(hub, clock, 26)
    shelved = engine.shelve(HIGH, 30)
    listed = list(engine.alarms.values())
    clock2 = Clock()
    clock2.advance(clock.seconds() + 600)  # restarted ten minutes later
    hub2 = Hub(epoch="E2", clock=clock2.seconds)
    engine2 = AlarmEngine(hub2, clock2)
    engine2.restore(listed, engine.seq)
    assert (engine2.alarms[HIGH].state, engine2.alarms[HIGH].shelved_until) == ("shelved", shelved.shelved_until)
    clock2.advance(1200 - 1)
    assert engine2.alarms[HIGH].state == "shelved"
    clock2.advance(1)
    assert engine2.alarms[HIGH].state == "active"


def test_a_restored_shelve_without_a_known_end_comes_back_at_once():
    from dataclasses import replace

    clock, hub, engine, heard = make(high=25.0)
    temp(hub, clock, 26)
    engine.shelve(HIGH, 30)
    listed = [replace(a, shelved_until=None) for a in engine.alarms.values()]  # a journal from before the column
    clock2 = Clock()
    engine2 = AlarmEngine(Hub(epoch="E2", clock=clock2.seconds), clock2)
    engine2.restore(listed, engine.seq)
    assert engine2.alarms[HIGH].state == "shelved"
    clock2.advance(0)
    assert engine2.alarms[HIGH].state == "active"


def test_the_plant_file_accepts_the_alarm_management_keys():
    text = """
[mqtt.main]
host = "127.0.0.1"

[units.ch1.points.supply_temp]
source = "mqtt.main"
topic = "ch1/supply"

[units.ch1.points.supply_temp.alarm]
high = 9.0
priority = "urgent"
delay = 5
delay_normal = 30
ack_required = false
latch = true
group = "chillers"
notification_class = 12
"""
    plant = parse_config(text)
    limits = plant.points[0].meta.limits
    assert limits == AlarmLimits(high=9.0, severity="critical", delay=5.0, delay_normal=30.0, ack_required=False,
                                 latch=True, group="chillers", notification_class=12)
    with pytest.raises(ConfigError) as e:
        parse_config(text.replace('"urgent"', '"urgent"\nseverity = "minor"'))
    assert "give one of the two" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(text.replace('"urgent"', '"soon"'))
    assert "urgent, high, medium, low" in str(e.value)


def test_configured_limits_on_hub_meta_carry_their_settings():
    clock = Clock()
    hub = Hub(epoch="E", clock=clock.seconds)
    hub.configure(P, PointMeta(limits=AlarmLimits(high=1.0, ack_required=False)))
    engine = AlarmEngine(hub, clock)
    temp(hub, clock, 2)
    assert engine.alarms[HIGH].ack_required is False


def test_a_shelved_returned_alarm_whose_condition_comes_back_is_active_after_the_shelve():
    clock, hub, engine, heard = make(high=25.0)
    temp(hub, clock, 26)
    engine.ack(HIGH)
    temp(hub, clock, 27)
    engine.shelve(HIGH, 5)  # shelved while acknowledged
    temp(hub, clock, 20)
    engine.ack(HIGH)  # an ack under a shelve changes nothing visible
    assert states(heard) == ["active", "acknowledged", "shelved"]
    temp(hub, clock, 26)
    clock.advance(300)
    assert states(heard) == ["active", "acknowledged", "shelved", "active"]


def test_a_latched_alarm_can_be_shelved_and_comes_back_normal_once_the_value_returned():
    clock, hub, engine, heard = make(high=25.0, latch=True)
    temp(hub, clock, 26)
    temp(hub, clock, 20)
    engine.shelve(HIGH, 1)
    clock.advance(60)
    assert states(heard) == ["active", "latched", "shelved", "normal"]


def test_out_of_service_then_back_with_the_condition_still_on_is_active_unacknowledged():
    clock, hub, engine, heard = make(high=25.0)
    temp(hub, clock, 26)
    engine.ack(HIGH)
    engine.set_out_of_service(P, True)
    engine.set_out_of_service(P, False)
    assert states(heard) == ["active", "acknowledged", "out_of_service", "active"]
    assert engine.set_out_of_service(P, False) is None  # already in service: nothing


def test_a_restored_source_alarm_returns_with_the_first_sample_of_its_source():
    clock, hub, engine, heard = make()
    ids = [f"s/vav/p{i}" for i in range(3)]
    hub.publish_many(Sample(i, 1.0, "", clock.seconds()) for i in ids)
    hub.set_status(ids, "fault")
    listed = list(engine.alarms.values())
    clock2 = Clock()
    hub2 = Hub(epoch="E2", clock=clock2.seconds)
    engine2 = AlarmEngine(hub2, clock2)
    engine2.restore(listed, engine.seq)
    hub2.publish(Sample(ids[0], 1.0, "", 5.0))
    assert engine2.alarms["s/vav/_source:source_down"].state == "returned"


def test_predict_refuses_the_engine_s_own_kinds():
    clock, hub, engine, heard = make()
    temp(hub, clock, 1)
    for kind in ("high", "source_down", "out_of_service", "down"):
        with pytest.raises(ValueError):
            engine.predict(P, True, kind=kind)


# -- the wire -----------------------------------------------------------------------


@pytest.mark.parametrize("message, parsed", [
    ({"type": "shelve", "alarm": HIGH, "minutes": 30}, "Shelve(alarm='p/u/t:high', minutes=30.0, comment='')"),
    ({"type": "shelve", "alarm": HIGH, "minutes": 0.5, "comment": "why"},
     "Shelve(alarm='p/u/t:high', minutes=0.5, comment='why')"),
    ({"type": "unshelve", "alarm": HIGH}, "Unshelve(alarm='p/u/t:high', comment='')"),
    ({"type": "out_of_service", "point": P, "on": False, "comment": "back"},
     "OutOfService(point='p/u/t', on=False, comment='back')"),
])
def test_the_new_client_messages_parse(message, parsed):
    import json

    from hvac_push.transport import wire

    assert repr(wire.parse_client_message(json.dumps(message))) == parsed


@pytest.mark.parametrize("message, detail", [
    ({"type": "shelve", "alarm": HIGH}, "'minutes' is required"),
    ({"type": "shelve", "alarm": HIGH, "minutes": 0}, "'minutes' must be a number above 0"),
    ({"type": "shelve", "alarm": HIGH, "minutes": True}, "'minutes' must be a number above 0"),
    ({"type": "shelve", "alarm": HIGH, "minutes": 10**9}, "at most 10080"),
    ({"type": "shelve", "alarm": "", "minutes": 5}, "'alarm' must be an alarm id"),
    ({"type": "shelve", "alarm": HIGH, "minutes": 5, "until": 3}, "unknown field 'until'"),
    ({"type": "unshelve", "alarm": HIGH, "comment": 5}, "'comment' must be a string"),
    ({"type": "out_of_service", "point": "nope", "on": True}, "'point' must be a point id"),
    ({"type": "out_of_service", "point": P, "on": "yes"}, "'on' must be true or false"),
    ({"type": "out_of_service", "point": P}, "'on' is required"),
])
def test_bad_new_client_messages_are_refused_with_a_reason(message, detail):
    import json

    from hvac_push.transport import wire

    with pytest.raises(wire.WireError) as e:
        wire.parse_client_message(json.dumps(message))
    # A member no message type has is an unknown_field, as for every type; a bad value is a bad_message.
    code = "unknown_field" if detail.startswith("unknown field") else "bad_message"
    assert e.value.code == code and detail in e.value.detail


def test_the_shelve_claim_is_read_from_tokens():
    from hvac_push.transport.auth import AuthError, permissions_from_claims

    assert permissions_from_claims({"points": ["#"], "shelve": True}).may_shelve
    assert not permissions_from_claims({"points": ["#"], "ack": True}).may_shelve
    with pytest.raises(AuthError, match="'shelve' must be true or false"):
        permissions_from_claims({"points": ["#"], "shelve": "yes"})


def test_the_token_helper_can_grant_the_shelve_claim(capsys, tmp_path):
    from hvac_push.transport.auth import StaticTokens, main

    assert main(["hash", "--generate", "--name", "sup", "--ack", "--shelve"]) == 0
    out = capsys.readouterr()
    (tmp_path / "tokens.toml").write_text(out.out)
    token = out.err.rsplit(" ", 1)[1].strip()
    assert StaticTokens.load(str(tmp_path / "tokens.toml")).verify(token).may_shelve


def test_since_keeps_the_time_the_alarm_was_raised_through_later_transitions():
    clock, hub, engine, heard = make(high=25.0)
    raised = clock.seconds()
    temp(hub, clock, 26)
    clock.advance(60)
    engine.ack(HIGH)
    clock.advance(60)
    temp(hub, clock, 27)  # a new reading while acknowledged: still the same occurrence
    alarm = engine.alarms[HIGH]
    assert alarm.state == "acknowledged" and alarm.ts > raised
    assert alarm.since == raised
    temp(hub, clock, 20)  # normal: gone
    clock.advance(60)
    temp(hub, clock, 28)  # raised again: a new since
    assert engine.alarms[HIGH].since == clock.seconds()
