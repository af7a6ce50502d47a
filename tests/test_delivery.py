"""Delivery driven by a fake clock over StringTransport: no sockets, no real time."""

from __future__ import annotations

import pytest
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from hvac_push.transport.fanout import PushServerFactory
from hvac_push.core.hub import Hub
from hvac_push.core.points import Sample
from hvac_push.transport.protocol import PushServerProtocol
from hvac_push.testing import server_messages, upgrade_request

QUIET = {"openHandshakeTimeout": 0, "autoPingInterval": 0, "closeHandshakeTimeout": 0}


class Setup:
    def __init__(self, protocol=PushServerProtocol, **kw):
        self.clock = Clock()
        self.hub = Hub(epoch="E", clock=lambda: 100.0)
        self.factory = PushServerFactory(self.hub, self.clock, interval=0.1, ws_options=QUIET, **kw)
        self.factory.protocol = protocol
        self.factory.start()

    def connect(self, path="/ws", headers=None):
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        proto.makeConnection(transport)
        proto.dataReceived(upgrade_request(path, headers))
        return proto, transport

    def publish(self, *samples):
        self.hub.publish_many(list(samples))


def messages(transport):
    return server_messages(transport.value())


def test_publish_is_flushed_on_the_next_reactor_turn_not_after_a_full_interval():
    s = Setup()
    proto, t = s.connect()
    s.publish(Sample("p/u/a", 1.0, "°C", 50.0))
    assert [m["type"] for m in messages(t)] == ["snapshot"]
    s.clock.advance(0)
    update = messages(t)[-1]
    assert update["type"] == "update" and update["points"]["p/u/a"]["value"] == 1.0


def test_the_looping_call_polls_clients_that_are_behind():
    s = Setup()
    s.hub.remove_listener(s.factory.wake)  # only the poll is left
    proto, t = s.connect()
    s.publish(Sample("p/u/a", 1.0, ts=50.0))
    s.clock.advance(0.05)
    assert len(messages(t)) == 1
    s.clock.advance(0.05)
    assert messages(t)[-1]["points"]["p/u/a"]["value"] == 1.0
    assert proto.last_version == s.hub.version
    assert s.factory.stats.ticks == 1


def test_an_update_holds_only_points_newer_than_the_clients_version_with_latest_values():
    s = Setup()
    s.publish(Sample("p/u/a", 1.0, ts=1.0), Sample("p/u/b", 1.0, ts=1.0))
    proto, t = s.connect()
    snapshot = messages(t)[0]
    assert set(snapshot["points"]) == {"p/u/a", "p/u/b"} and snapshot["version"] == 2
    s.publish(Sample("p/u/a", 2.0, ts=2.0))
    s.publish(Sample("p/u/a", 3.0, ts=3.0))
    s.clock.advance(0)
    update = messages(t)[-1]
    assert update["points"] == {"p/u/a": {"value": 3.0, "unit": "", "ts": 3.0, "version": 4, "status": "ok"}}
    assert update["version"] == 4


def test_clients_at_one_version_with_one_subscription_share_one_encoded_frame():
    s = Setup()
    clients = [s.connect() for _ in range(5)]
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    s.clock.advance(0)
    assert s.factory.stats.frames_encoded == 1
    assert s.factory.stats.messages_sent == 5
    frames = {t.value().rpartition(b"\r\n\r\n")[2] for _, t in clients}
    assert len({f[-60:] for f in frames}) == 1


def test_a_paused_client_is_skipped_and_then_gets_one_update_with_the_newest_state():
    s = Setup()
    proto, t = s.connect()
    proto.pauseProducing()
    for i in range(100):
        s.publish(Sample(f"p/u/{'abc'[i % 3]}", float(i), ts=float(i)))
        s.clock.advance(0)
    assert len(messages(t)) == 1
    assert s.factory.stats.skipped_paused > 0
    proto.resumeProducing()
    s.clock.advance(0)
    received = messages(t)
    assert len(received) == 2
    assert {k: v["value"] for k, v in received[1]["points"].items()} == {"p/u/a": 99.0, "p/u/b": 97.0, "p/u/c": 98.0}


def test_the_query_filter_keeps_a_literal_plus_as_a_wildcard():
    s = Setup()
    s.publish(Sample("p/a/t", 1, ts=1.0), Sample("p/b/t", 1, ts=1.0), Sample("p/a/x", 1, ts=1.0))
    proto, t = s.connect("/ws?points=p/+/t")
    assert set(messages(t)[0]["points"]) == {"p/a/t", "p/b/t"}
    proto2, t2 = s.connect("/ws?points=p%2Fa%2F%23,p/b/t")
    assert set(messages(t2)[0]["points"]) == {"p/a/t", "p/a/x", "p/b/t"}


def test_a_bad_query_filter_is_refused_with_400():
    s = Setup()
    proto, t = s.connect("/ws?points=p/%23/t")
    assert t.value().startswith(b"HTTP/1.1 400")
    assert s.factory.stats.handshakes_denied == {400: 1}


def test_subscribe_answers_with_a_snapshot_of_newly_matched_points_only():
    s = Setup()
    s.publish(Sample("p/a/t", 1, ts=1.0), Sample("p/b/t", 2, ts=1.0), Sample("p/a/x", 3, ts=1.0))
    proto, t = s.connect("/ws?points=p/a/t")
    proto.onMessage(b'{"type":"subscribe","points":["p/+/t"]}', False)
    reply = messages(t)[-1]
    assert reply["type"] == "snapshot" and set(reply["points"]) == {"p/b/t"}
    proto.onMessage(b'{"type":"unsubscribe","points":["p/+/t"]}', False)
    s.publish(Sample("p/a/t", 9, ts=2.0), Sample("p/b/t", 9, ts=2.0), Sample("p/a/x", 9, ts=2.0))
    s.clock.advance(0)
    update = messages(t)[-1]
    assert update["type"] == "update" and set(update["points"]) == {"p/a/t"}
    proto.onMessage(b'{"type":"unsubscribe","points":["nope/x/y"]}', False)
    assert messages(t)[-1] == {"type": "error", "error": "not_subscribed", "detail": "not subscribed to nope/x/y"}


def test_origin_allow_list_refuses_others_with_403_but_admits_scripts_without_origin():
    s = Setup(allowed_origins=["https://scada.example"])
    _, ok = s.connect(headers={"Origin": "https://scada.example"})
    _, bad = s.connect(headers={"Origin": "https://evil.example"})
    _, script = s.connect()
    assert ok.value().startswith(b"HTTP/1.1 101")
    assert bad.value().startswith(b"HTTP/1.1 403")
    assert script.value().startswith(b"HTTP/1.1 101")


def test_handshakes_beyond_the_connection_cap_get_503():
    s = Setup(max_connections=2)
    results = [s.connect()[1].value()[:12] for _ in range(3)]
    assert results == [b"HTTP/1.1 101", b"HTTP/1.1 101", b"HTTP/1.1 503"]


class Guarded(PushServerProtocol):
    def acceptHandshake(self, request):
        if request.headers.get("x-badge") != "ok":
            raise ConnectionDeny(401, "badge required")


class Broken(PushServerProtocol):
    def acceptHandshake(self, request):
        raise KeyError("bug in a subclass")


def test_a_subclass_hook_can_refuse_with_its_own_status():
    s = Setup(protocol=Guarded)
    assert s.connect(headers={"X-Badge": "ok"})[1].value().startswith(b"HTTP/1.1 101")
    assert s.connect()[1].value().startswith(b"HTTP/1.1 401")


def test_an_exception_in_the_handshake_is_logged_and_answered_with_500():
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        s = Setup(protocol=Broken)
        assert s.connect()[1].value().startswith(b"HTTP/1.1 500")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any(e.get("log_failure") is not None and "handshake" in e.get("log_format", "") for e in events)


def test_bad_json_gets_an_error_and_the_connection_keeps_working():
    s = Setup()
    proto, t = s.connect()
    proto.onMessage(b"{nope", False)
    proto.onMessage(b"\x00\x01", True)
    proto.onMessage(b'{"type":"ping","id":42}', False)
    got = messages(t)[1:]
    assert [m.get("error") for m in got[:2]] == ["bad_json", "binary_not_supported"]
    assert got[2] == {"type": "pong", "id": 42}


@pytest.mark.parametrize("closing", ["close_all"])
def test_close_all_sends_going_away(closing):
    s = Setup()
    proto, t = s.connect()
    t.clear()
    s.factory.close_all()
    frame = t.value()
    assert frame[0] == 0x88 and int.from_bytes(frame[2:4], "big") == 1001
