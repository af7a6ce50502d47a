"""hvac_push.transport.limits and hvac_push.transport.guard, without sockets: a fake clock and string
transports, so every timing is exact."""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.analytics.history import History
from hvac_push.transport.auth import AuthError, Authenticator, Permissions
from hvac_push.transport.guard import ConnectionGuard
from hvac_push.transport.limits import ABUSIVE, ACCEPT, LIMITED, Limits, MessageGate
from hvac_push.core.points import AlarmLimits, Pattern, Sample
from hvac_push.testing import server_frames
from tests.logwatch import watch_log
from tests.nbsock import BINARY, CLOSE, PING, TEXT, frame
from tests.test_delivery import Setup


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """Every (opcode, payload) the server wrote after its HTTP response."""
    return [(frame.opcode, frame.payload) for frame in server_frames(data)]


def close_frames(transport: StringTransport) -> list[tuple[int, bytes]]:
    return [(struct.unpack("!H", p[:2])[0], p[2:]) for op, p in frames(transport.value()) if op == CLOSE]


# -- values -------------------------------------------------------------------


def test_message_gate_refills_refuses_then_calls_abuse():
    gate = MessageGate(rate=2.0, burst=3, now=0.0)
    assert [gate.admit(0.0) for _ in range(4)] == [ACCEPT, ACCEPT, ACCEPT, LIMITED]
    assert gate.admit(0.5) == ACCEPT  # one token back after 0.5 s at 2/s
    assert gate.admit(0.5) == LIMITED
    # Refusals are forgiven at one per second; more than `burst` outstanding is abuse.
    assert gate.admit(0.5) == LIMITED
    assert gate.admit(0.5) == ABUSIVE
    gate = MessageGate(rate=2.0, burst=3, now=0.0)
    verdicts = [gate.admit(t * 0.25) for t in range(40)]  # 4 per second against 2 allowed
    assert ABUSIVE in verdicts
    gate = MessageGate(rate=2.0, burst=3, now=0.0)
    assert ABUSIVE not in [gate.admit(t * 0.5) for t in range(100)]  # exactly the rate: fine


@pytest.mark.parametrize(
    "kwargs", [{"max_message_size": 10}, {"client_rate": -1}, {"client_burst": 0}, {"slow_client_timeout": -2}]
)
def test_bad_limits(kwargs):
    with pytest.raises(ValueError):
        Limits(**kwargs)


def test_limits_feed_autobahn_but_explicit_ws_options_win():
    s = Setup(limits=Limits(max_message_size=4096, handshake_timeout=3))
    assert s.factory.maxMessagePayloadSize == 4096 == s.factory.maxFramePayloadSize
    assert s.factory.openHandshakeTimeout == 0  # QUIET in Setup overrides
    s = Setup(limits=Limits(max_message_size=4096))
    assert s.factory.failByDrop is False


def test_connection_guard_counts_per_ip():
    guard = ConnectionGuard(Limits(max_connections_per_ip=2), clock=None)  # type: ignore[arg-type]
    a, b, c = object(), object(), object()
    assert guard.admit(a, "10.0.0.1") and guard.admit(b, "10.0.0.1")  # type: ignore[arg-type]
    assert not guard.admit(c, "10.0.0.1")  # type: ignore[arg-type]
    assert guard.admit(c, "10.0.0.2")  # type: ignore[arg-type]
    guard.forget(a)  # type: ignore[arg-type]
    guard.forget(a)  # type: ignore[arg-type]  # twice is harmless
    assert guard.per_ip == {"10.0.0.1": 1, "10.0.0.2": 1}
    unlimited = ConnectionGuard(Limits(max_connections_per_ip=0), clock=None)  # type: ignore[arg-type]
    assert all(unlimited.admit(object(), "h") for _ in range(1000))  # type: ignore[arg-type]


# -- the protocol under a fake clock -------------------------------------------


def test_a_client_paused_past_the_limit_gets_1013_then_is_aborted():
    s = Setup(limits=Limits(slow_client_timeout=1.0))
    proto, t = s.connect()
    proto.pauseProducing()
    s.clock.advance(0.9)
    assert not close_frames(t) and proto in s.factory.guard.paused
    proto.resumeProducing()  # caught up in time: forgiven
    s.clock.advance(1.0)
    assert not close_frames(t)
    proto.pauseProducing()
    for _ in range(11):
        s.clock.advance(0.1)
    assert close_frames(t) == [(1013, b"too slow: not reading for 1 s")]
    assert s.factory.guard.stats.slow_closes == 1 and not s.factory.guard.paused
    assert not t.disconnecting
    s.clock.advance(5.0)  # the close grace (closeHandshakeTimeout is 0 here: 5 s)
    assert t.disconnected and s.factory.guard.stats.aborted == 1


def test_slow_checks_only_look_at_paused_clients():
    s = Setup(limits=Limits(slow_client_timeout=1.0))
    clients = [s.connect()[0] for _ in range(50)]
    clients[7].pauseProducing()
    assert list(s.factory.guard.paused) == [clients[7]]
    s.clock.advance(2.0)
    assert s.factory.guard.stats.slow_closes == 1


class OneToken:
    def __init__(self, permissions: Permissions):
        self.permissions = permissions

    def verify(self, token: str) -> Permissions:
        if token != "good":
            raise AuthError("invalid token")
        return self.permissions


def test_the_expiry_close_is_timed_on_the_factorys_reactor():
    grant = Permissions((Pattern.parse("#"),), expires=time.time() + 30)
    s = Setup(authenticator=Authenticator([OneToken(grant)]))
    proto, t = s.connect(headers={"Authorization": "Bearer good"})
    assert proto.permissions is grant
    s.clock.advance(29)
    assert not close_frames(t)
    s.clock.advance(2)
    assert close_frames(t) == [(4001, b"token expired")]
    assert s.factory.guard.stats.expired_closes == 1


def test_401_carries_a_bearer_challenge_and_counts_nothing_against_the_ip():
    s = Setup(authenticator=Authenticator([OneToken(Permissions((Pattern.parse("#"),)))]))
    proto, t = s.connect(headers={"Authorization": "Bearer bad"})
    head = t.value().decode("latin-1")
    assert head.startswith("HTTP/1.1 401 invalid token\r\n")
    assert 'WWW-Authenticate: Bearer realm="hvac-push", error="invalid_token"' in head
    proto.connectionLost()
    assert s.factory.guard.per_ip == {} and s.factory.stats.handshakes_denied == {401: 1}


def test_restricted_default_subscription_and_forbidden_query_patterns():
    grant = Permissions((Pattern.parse("p/u/#"),))
    s = Setup(authenticator=Authenticator([OneToken(grant)]))
    s.publish(Sample("p/u/a", 1.0, ts=1.0), Sample("p/v/a", 2.0, ts=1.0))
    proto, t = s.connect(headers={"Authorization": "Bearer good"})
    assert proto.subscription.key == {"p/u/#"}
    proto2, t2 = s.connect("/ws?points=p/%2B/a", headers={"Authorization": "Bearer good"})
    from hvac_push.testing import server_messages

    snapshot, error = server_messages(t2.value())
    assert snapshot["points"] == {} and error["error"] == "forbidden" and "p/+/a" in error["detail"]


# -- fuzzing the protocol with frames ----------------------------------------------

PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b'{"type":"ping","id":1}', b'{"type":"subscribe","points":["#"]}', b"{}", b"[]",
                     b'{"type":"auth","token":"x"}', b'{"type":"unsubscribe","points":["a/b/c"]}']),
)
FRAMES = st.builds(
    lambda opcode, payload, mask, fin, rsv, lie: frame(
        opcode, payload, mask=mask, fin=fin, rsv=rsv, length=None if lie is None else lie),
    st.sampled_from([0x0, TEXT, BINARY, 0x3, CLOSE, PING, 0xA, 0xF]),
    PAYLOADS,
    st.booleans() | st.just(True),
    st.booleans() | st.just(True),
    st.sampled_from([0, 0, 0, 1, 4]),
    st.none() | st.none() | st.integers(0, 2**63 - 1),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(FRAMES, st.binary(min_size=1, max_size=64)), max_size=8), st.integers(1, 64))
def test_any_bytes_after_the_upgrade_never_raise_or_log_a_traceback(chunks, split):
    s = Setup(limits=Limits(client_rate=1000))
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    with watch_log() as log:
        proto, t = s.connect()
        data = b"".join(chunks)
        for offset in range(0, len(data), split):  # in pieces, as TCP may deliver them
            if t.disconnecting:
                break
            proto.dataReceived(data[offset : offset + split])
        s.publish(Sample("p/u/a", 2.0, ts=2.0))
        s.clock.advance(0.2)
        proto.connectionLost()
    assert not log.failures()
    assert proto not in s.factory.connections and not s.factory.guard.per_ip


# -- what each grant may do with alarms and history (found unpinned by mutation testing) ----------


class Grants:
    """A verifier that admits a few fixed tokens, each with its own grant."""

    def __init__(self, grants: dict[str, Permissions]):
        self.grants = grants

    def verify(self, token: str) -> Permissions:
        if token not in self.grants:
            raise AuthError("invalid token")
        return self.grants[token]


def _alarm_server(grants: dict[str, Permissions]) -> tuple[Setup, AlarmEngine]:
    """Two points in alarm, p/u/a and q/u/a, on a server whose tokens are C{grants}."""
    s = Setup(authenticator=Authenticator([Grants(grants)]))
    engine = AlarmEngine(s.hub, s.clock, max_shelve=3600)
    for point in ("p/u/a", "q/u/a"):
        engine.set_limits(point, AlarmLimits(high=25.0))
    s.factory.attach_alarms(engine)
    s.factory.history = History(s.hub)
    s.publish(Sample("p/u/a", 26.0, ts=1.0), Sample("q/u/a", 26.0, ts=1.0))
    return s, engine


def _ask(c: Any, message: dict[str, Any]) -> dict[str, Any]:
    """Send one command; its answer (the last message the server sent)."""
    c.send_json(message)
    answer: dict[str, Any] = c.messages()[-1]
    return answer


def _grant(text: str, **options: Any) -> Permissions:
    return Permissions((Pattern.parse(text),), **options)


def test_a_client_sees_only_the_alarms_of_points_it_subscribes_to_and_may_read():
    s, engine = _alarm_server({"p": _grant("p/#"), "all": _grant("#")})
    reader = s.connect(headers={"Authorization": "Bearer p"})
    narrow = s.connect("/ws?points=q/u/b", headers={"Authorization": "Bearer all"})
    everyone = s.connect(headers={"Authorization": "Bearer all"})

    def listed(c: Any) -> list[str]:
        return [a["id"] for m in c.messages() if m["type"] in ("snapshot", "alarms") for a in m.get("alarms", [])]

    assert listed(reader) == ["p/u/a:high"]
    assert listed(narrow) == []
    assert sorted(listed(everyone)) == ["p/u/a:high", "q/u/a:high"]
    seq = engine.seq
    s.publish(Sample("p/u/a", 20.0, ts=2.0), Sample("q/u/a", 20.0, ts=2.0))  # both return to normal
    s.advance(0)
    moved = [m["alarm"]["id"] for m in reader.messages() if m["type"] == "alarm"]
    assert moved == ["p/u/a:high"]
    resumed = s.connect(headers={"Authorization": "Bearer p"})
    resumed.send_json({"type": "resume", "since": 0, "epoch": s.hub.epoch, "alarm_seq": seq})
    replayed = [(m["seq"], m["alarm"]["id"]) for m in resumed.messages() if m["type"] == "alarm"]
    assert [alarm for _, alarm in replayed] == ["p/u/a:high"] and seq < replayed[0][0] <= engine.seq


def test_acknowledging_needs_the_ack_claim_and_a_readable_alarm_and_records_who():
    s, engine = _alarm_server({"reader": _grant("p/#"), "acker": _grant("p/#", may_ack=True, subject="ann"),
                               "anon": _grant("#", may_ack=True)})
    reader = s.connect(headers={"Authorization": "Bearer reader"})
    acker = s.connect(headers={"Authorization": "Bearer acker"})
    anon = s.connect(headers={"Authorization": "Bearer anon"})
    refused = _ask(reader, {"type": "ack", "alarm": "p/u/a:high"})
    assert (refused["error"], refused["detail"]) == ("forbidden", "not allowed to acknowledge alarms")
    hidden = _ask(acker, {"type": "ack", "alarm": "q/u/a:high"})
    assert (hidden["error"], hidden["detail"]) == ("unknown_alarm", "no listed alarm q/u/a:high")
    assert engine.alarms["q/u/a:high"].state == "active"
    assert _ask(acker, {"type": "ack", "alarm": "p/u/a:high", "comment": "seen"}) == {
        "type": "acked", "alarm": "p/u/a:high"}
    assert (engine.alarms["p/u/a:high"].by, engine.alarms["p/u/a:high"].comment) == ("ann", "seen")
    assert _ask(anon, {"type": "ack", "alarm": "q/u/a:high"})["type"] == "acked"
    assert (engine.alarms["q/u/a:high"].by, engine.alarms["q/u/a:high"].comment) == ("anonymous", None)


def test_shelving_and_out_of_service_need_the_shelve_claim_and_a_readable_point():
    s, engine = _alarm_server({"acker": _grant("p/#", may_ack=True), "shelver": _grant("p/#", may_shelve=True,
                                                                                     subject="bob")})
    acker = s.connect(headers={"Authorization": "Bearer acker"})
    shelver = s.connect(headers={"Authorization": "Bearer shelver"})
    refused = _ask(acker, {"type": "shelve", "alarm": "p/u/a:high", "minutes": 5})
    assert (refused["error"], refused["detail"]) == (
        "forbidden", "not allowed to shelve alarms or take points out of service")
    assert _ask(shelver, {"type": "shelve", "alarm": "q/u/a:high", "minutes": 5})["error"] == "unknown_alarm"
    outside = _ask(shelver, {"type": "out_of_service", "point": "q/u/a", "on": True})
    assert (outside["error"], outside["detail"]) == ("forbidden", "not allowed to read q/u/a")
    shelved = _ask(shelver, {"type": "shelve", "alarm": "p/u/a:high", "minutes": 5})
    assert shelved == {"type": "shelved", "alarm": "p/u/a:high", "until": s.clock.seconds() + 300}
    assert engine.alarms["p/u/a:high"].by == "bob"
    assert _ask(shelver, {"type": "unshelve", "alarm": "p/u/a:high"}) == {
        "type": "shelved", "alarm": "p/u/a:high", "until": None}
    assert _ask(shelver, {"type": "out_of_service", "point": "p/u/a", "on": True}) == {
        "type": "out_of_service", "point": "p/u/a", "on": True}
    assert engine.alarms["q/u/a:high"].state == "active"  # untouched by all of the above


def test_history_is_answered_only_for_points_the_grant_may_read():
    s, _ = _alarm_server({"p": _grant("p/#")})
    c = s.connect(headers={"Authorization": "Bearer p"})
    refused = _ask(c, {"type": "history", "point": "q/u/a"})
    assert (refused["error"], refused["detail"]) == ("forbidden", "not allowed to read q/u/a")
    assert _ask(c, {"type": "history", "point": "p/u/zz"})["error"] == "unknown_point"
    answer = _ask(c, {"type": "history", "point": "p/u/a"})
    assert answer == {"type": "history", "point": "p/u/a", "samples": [[1.0, 26.0]]}


def test_a_subscribe_outside_the_grant_is_refused_counted_and_changes_nothing():
    s = Setup(authenticator=Authenticator([Grants({"p": _grant("p/#")})]))
    c = s.connect(headers={"Authorization": "Bearer p"})
    refused = _ask(c, {"type": "subscribe", "points": ["p/u/a", "q/#", "+/u/a"]})
    assert (refused["error"], refused["detail"]) == ("forbidden", "not allowed to read q/#, +/u/a")
    assert s.factory.guard_stats.forbidden == 1
    assert c.protocol.subscription.key == {"p/#"}
    assert _ask(c, {"type": "subscribe", "points": ["p/u/a"]})["type"] == "snapshot"
    assert _ask(c, {"type": "subscribe", "points": ["q/u/a"]})["error"] == "forbidden"
    assert s.factory.guard_stats.forbidden == 2  # each refusal counts


def test_the_subscription_cap_admits_exactly_its_number_of_patterns_at_the_handshake_and_after():
    s = Setup(limits=Limits(max_subscriptions=2))
    assert s.connect("/ws?points=a/b/c,a/b/d").status == 101
    over = s.connect("/ws?points=a/b/c,a/b/d,a/b/e")
    assert over.status == 400 and b"at most 2 patterns per connection" in over.transport.value()
    c = s.connect("/ws?points=a/b/c")
    assert _ask(c, {"type": "subscribe", "points": ["a/b/c", "a/b/d"]})["type"] == "snapshot"
    refused = _ask(c, {"type": "subscribe", "points": ["a/b/e"]})
    assert (refused["error"], refused["detail"]) == (
        "too_many_subscriptions", "at most 2 patterns per connection (this would make 3)")


def test_alarm_commands_record_who_and_why_and_map_engine_refusals_to_error_codes():
    s, engine = _alarm_server({"bob": _grant("#", may_ack=True, may_shelve=True, subject="bob")})
    c = s.connect(headers={"Authorization": "Bearer bob"})
    assert _ask(c, {"type": "shelve", "alarm": "p/u/a:high", "minutes": 5, "comment": "noisy"})["type"] == "shelved"
    assert engine.alarms["p/u/a:high"].comment == "noisy"
    _ask(c, {"type": "unshelve", "alarm": "p/u/a:high", "comment": "fixed"})
    assert (engine.alarms["p/u/a:high"].by, engine.alarms["p/u/a:high"].comment) == ("bob", "fixed")
    assert _ask(c, {"type": "out_of_service", "point": "q/u/a", "on": True, "comment": "repair"})["on"] is True
    assert engine.out_of_service["q/u/a"] == ("bob", "repair")
    marker = engine.alarms["q/u/a:out_of_service"]
    assert (marker.by, marker.comment) == ("bob", "repair")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"type": "unshelve", "alarm": "p/u/a:high"}, "wrong_state", "p/u/a:high is not shelved"),
        ({"type": "shelve", "alarm": "p/u/zz:high", "minutes": 5}, "unknown_alarm", "no listed alarm p/u/zz:high"),
        ({"type": "out_of_service", "point": "p/u/zz", "on": True}, "unknown_point", "no point p/u/zz"),
        ({"type": "ack", "alarm": "p/u/zz:high"}, "unknown_alarm", "no listed alarm p/u/zz:high"),
    ]
    for message, code, detail in cases:
        answer = _ask(c, message)
        assert (answer["error"], answer["detail"]) == (code, detail), message


def test_without_alarms_or_history_the_commands_say_so():
    s = Setup(authenticator=Authenticator([Grants({"all": _grant("#", may_ack=True, may_shelve=True)})]))
    c = s.connect(headers={"Authorization": "Bearer all"})
    commands: list[tuple[dict[str, Any], str]] = [
        ({"type": "ack", "alarm": "p/u/a:high"}, "alarms are not enabled on this server"),
        ({"type": "shelve", "alarm": "p/u/a:high", "minutes": 5}, "alarms are not enabled on this server"),
        ({"type": "history", "point": "p/u/a"}, "history is not enabled on this server"),
    ]
    for message, detail in commands:
        answer = _ask(c, message)
        assert (answer["error"], answer["detail"]) == ("unavailable", detail)


def test_a_resume_without_an_alarm_sequence_gets_the_full_readable_alarm_list():
    s, engine = _alarm_server({"p": _grant("p/#")})
    c = s.connect(headers={"Authorization": "Bearer p"})
    c.send_json({"type": "resume", "since": 0, "epoch": s.hub.epoch})
    listing = c.messages()[-1]
    assert listing["type"] == "alarms" and listing["alarm_seq"] == engine.seq
    assert [a["id"] for a in listing["alarms"]] == ["p/u/a:high"]

