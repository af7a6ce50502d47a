"""hvac_push.transport.fanout and hvac_push.transport.protocol, over hvac_push.testing.MemoryServer:
delivery driven by a fake clock over StringTransport, no sockets, no real time."""

from __future__ import annotations

from typing import Unpack

import pytest
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest

from hvac_push.core.points import Sample
from hvac_push.testing import BINARY, TEXT, FactoryOptions, MemoryServer
from hvac_push.transport.protocol import PushServerProtocol
from tests.logwatch import watch_log


class Setup(MemoryServer[PushServerProtocol]):
    """The stock protocol in memory (other test modules import it from here)."""

    def __init__(self, **options: Unpack[FactoryOptions]) -> None:
        super().__init__(PushServerProtocol, **options)


def test_publish_is_flushed_on_the_next_reactor_turn_not_after_a_full_interval():
    s = Setup()
    c = s.connect()
    s.publish(Sample("p/u/a", 1.0, "°C", 50.0))
    assert [m["type"] for m in c.messages()] == ["snapshot"]
    s.advance(0)
    update = c.messages()[-1]
    assert update["type"] == "update" and update["points"]["p/u/a"]["value"] == 1.0


def test_the_looping_call_polls_clients_that_are_behind():
    s = Setup()
    s.hub.remove_listener(s.factory.wake)  # only the poll is left
    c = s.connect()
    s.publish(Sample("p/u/a", 1.0, ts=50.0))
    s.advance(0.05)
    assert len(c.messages()) == 1
    s.advance(0.05)
    assert c.messages()[-1]["points"]["p/u/a"]["value"] == 1.0
    assert c.protocol.last_version == s.hub.version
    assert s.factory.stats.ticks == 1


def test_an_update_holds_only_points_newer_than_the_clients_version_with_latest_values():
    s = Setup()
    s.publish(Sample("p/u/a", 1.0, ts=1.0), Sample("p/u/b", 1.0, ts=1.0))
    c = s.connect()
    snapshot = c.messages()[0]
    assert set(snapshot["points"]) == {"p/u/a", "p/u/b"} and snapshot["version"] == 2
    s.publish(Sample("p/u/a", 2.0, ts=2.0))
    s.publish(Sample("p/u/a", 3.0, ts=3.0))
    s.advance(0)
    update = c.messages()[-1]
    assert update["points"] == {"p/u/a": {"value": 3.0, "unit": "", "ts": 3.0, "version": 4, "status": "ok"}}
    assert update["version"] == 4


def test_clients_at_one_version_with_one_subscription_share_one_encoded_frame():
    s = Setup()
    clients = [s.connect() for _ in range(5)]
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    s.advance(0)
    assert s.factory.stats.frames_encoded == 1
    assert s.factory.stats.messages_sent == 5
    frames = {c.transport.value().rpartition(b"\r\n\r\n")[2] for c in clients}
    assert len({f[-60:] for f in frames}) == 1


def test_a_paused_client_is_skipped_and_then_gets_one_update_with_the_newest_state():
    s = Setup()
    c = s.connect()
    c.protocol.pauseProducing()
    for i in range(100):
        s.publish(Sample(f"p/u/{'abc'[i % 3]}", float(i), ts=float(i)))
        s.advance(0)
    assert len(c.messages()) == 1
    assert s.factory.stats.skipped_paused > 0
    c.protocol.resumeProducing()
    s.advance(0)
    received = c.messages()
    assert len(received) == 2
    assert {k: v["value"] for k, v in received[1]["points"].items()} == {"p/u/a": 99.0, "p/u/b": 97.0, "p/u/c": 98.0}


def test_the_query_filter_keeps_a_literal_plus_as_a_wildcard():
    s = Setup()
    s.publish(Sample("p/a/t", 1, ts=1.0), Sample("p/b/t", 1, ts=1.0), Sample("p/a/x", 1, ts=1.0))
    c = s.connect("/ws?points=p/+/t")
    assert set(c.messages()[0]["points"]) == {"p/a/t", "p/b/t"}
    c2 = s.connect("/ws?points=p%2Fa%2F%23,p/b/t")
    assert set(c2.messages()[0]["points"]) == {"p/a/t", "p/a/x", "p/b/t"}


def test_a_bad_query_filter_is_refused_with_400():
    s = Setup()
    c = s.connect("/ws?points=p/%23/t")
    assert c.transport.value().startswith(b"HTTP/1.1 400")
    assert s.factory.stats.handshakes_denied == {400: 1}


def test_subscribe_answers_with_a_snapshot_of_newly_matched_points_only():
    s = Setup()
    s.publish(Sample("p/a/t", 1, ts=1.0), Sample("p/b/t", 2, ts=1.0), Sample("p/a/x", 3, ts=1.0))
    c = s.connect("/ws?points=p/a/t")
    c.send_json({"type": "subscribe", "points": ["p/+/t"]})
    reply = c.messages()[-1]
    assert reply["type"] == "snapshot" and set(reply["points"]) == {"p/b/t"}
    c.send_json({"type": "unsubscribe", "points": ["p/+/t"]})
    s.publish(Sample("p/a/t", 9, ts=2.0), Sample("p/b/t", 9, ts=2.0), Sample("p/a/x", 9, ts=2.0))
    s.advance(0)
    update = c.messages()[-1]
    assert update["type"] == "update" and set(update["points"]) == {"p/a/t"}
    c.send_json({"type": "unsubscribe", "points": ["nope/x/y"]})
    assert c.messages()[-1] == {"type": "error", "error": "not_subscribed", "detail": "not subscribed to nope/x/y"}


def test_origin_allow_list_refuses_others_with_403_but_admits_scripts_without_origin():
    s = Setup(allowed_origins=["https://scada.example"])
    ok = s.connect(headers={"Origin": "https://scada.example"}).transport
    bad = s.connect(headers={"Origin": "https://evil.example"}).transport
    script = s.connect().transport
    assert ok.value().startswith(b"HTTP/1.1 101")
    assert bad.value().startswith(b"HTTP/1.1 403")
    assert script.value().startswith(b"HTTP/1.1 101")


def test_handshakes_beyond_the_connection_cap_get_503():
    s = Setup(max_connections=2)
    results = [s.connect().transport.value()[:12] for _ in range(3)]
    assert results == [b"HTTP/1.1 101", b"HTTP/1.1 101", b"HTTP/1.1 503"]


class Guarded(PushServerProtocol):
    def acceptHandshake(self, request: ConnectionRequest) -> None:
        if request.headers.get("x-badge") != "ok":
            raise ConnectionDeny(401, "badge required")


class Broken(PushServerProtocol):
    def acceptHandshake(self, request: ConnectionRequest) -> None:
        raise KeyError("bug in a subclass")


def test_a_subclass_hook_can_refuse_with_its_own_status():
    s = MemoryServer(Guarded)
    assert s.connect(headers={"X-Badge": "ok"}).transport.value().startswith(b"HTTP/1.1 101")
    assert s.connect().transport.value().startswith(b"HTTP/1.1 401")


def test_an_exception_in_the_handshake_is_logged_and_answered_with_500():
    with watch_log() as log:
        s = MemoryServer(Broken)
        assert s.connect().transport.value().startswith(b"HTTP/1.1 500")
    events = log.events
    assert any(e.get("log_failure") is not None and "handshake" in e.get("log_format", "") for e in events)


def test_bad_json_gets_an_error_and_the_connection_keeps_working():
    s = Setup()
    c = s.connect()
    c.send_frame(TEXT, b"{nope")
    c.send_frame(BINARY, b"\x00\x01")
    c.send_json({"type": "ping", "id": 42})
    got = c.messages()[1:]
    assert [m.get("error") for m in got[:2]] == ["bad_json", "binary_not_supported"]
    assert got[2] == {"type": "pong", "id": 42}


@pytest.mark.parametrize(
    "arguments, code, reason",
    [
        ({}, 1001, b"server shutting down"),  # the default: going away
        ({"code": 1012, "reason": "restarting"}, 1012, b"restarting"),
    ],
)
def test_close_all_sends_every_client_a_close_frame_with_the_code_and_reason(arguments, code, reason):
    s = Setup()
    clients = [s.connect(), s.connect()]
    for c in clients:
        c.transport.clear()
    s.factory.close_all(**arguments)
    for c in clients:
        frame = c.transport.value()
        assert frame[0] == 0x88 and int.from_bytes(frame[2:4], "big") == code
        assert frame[4 : 2 + frame[1]] == reason


# -- behaviours mutation testing found unpinned (scripts/mutation, docs/testing.md) ------------------


def test_origins_match_whatever_their_case_and_trailing_slash_and_each_refusal_is_counted():
    s = Setup(allowed_origins=["https://SCADA.example/"])
    for origin in ("https://scada.example", "https://scada.example/", "https://Scada.Example"):
        assert s.connect(headers={"Origin": origin}).status == 101, origin
    for origin in ("https://evil.example", "https://evil.example/", "https://scada.exampleX"):
        assert s.connect(headers={"Origin": origin}).status == 403
    assert s.factory.stats.handshakes_denied == {403: 3}


def test_when_drained_fires_only_once_the_last_connection_is_lost():
    s = Setup()
    first, second = s.connect(), s.connect()
    drained = s.factory.when_drained()
    fired: list[None] = []
    drained.addCallback(fired.append)
    first.disconnect()
    assert fired == []
    second.disconnect()
    assert fired == [None]
    late: list[None] = []
    s.factory.when_drained().addCallback(late.append)
    assert late == [None]  # nobody left: at once

