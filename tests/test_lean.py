"""hvac_push.transport.lean: an open client keeps no handshake text and no private traffic counters, and still works."""

from __future__ import annotations

import pytest

from hvac_push.core.points import Sample
from hvac_push.testing import MemoryServer
from hvac_push.transport.lean import SHARED_TRAFFIC_STATS
from hvac_push.transport.protocol import PushServerProtocol


def test_an_open_client_drops_its_upgrade_request_and_shares_the_traffic_counters():
    s = MemoryServer(PushServerProtocol)
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    one, two = s.connect("/ws?points=p/u/%23"), s.connect()
    for c in (one, two):
        state: dict[str, object] = vars(c.protocol)
        assert state["http_request_data"] is None and state["http_response_data"] is None
        assert state["http_headers"] == {}
        assert state["trafficStats"] is SHARED_TRAFFIC_STATS
    # still a working connection: commands, replies and updates
    one.send_json({"type": "ping", "id": 7})
    assert one.messages()[-1] == {"type": "pong", "id": 7}
    s.publish(Sample("p/u/a", 2.0, ts=2.0))
    s.advance(0)
    assert one.messages()[-1]["points"]["p/u/a"]["value"] == 2.0
    assert two.messages()[-1]["points"]["p/u/a"]["value"] == 2.0
    one.send_frame(0x8, b"\x03\xe8")  # close 1000
    assert one.frames()[-1].opcode == 0x8


def test_a_handshake_pretty_prints_nothing_while_debug_logging_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import autobahn.websocket.protocol as autobahn_protocol
    from autobahn.websocket.protocol import Timings

    from hvac_push.transport.lean import LazyPformat

    installed: object = getattr(autobahn_protocol, "pformat")
    assert installed is LazyPformat
    calls: list[object] = []
    real = LazyPformat.__str__

    def counted(self: LazyPformat) -> str:
        calls.append(self.obj)
        return real(self)

    monkeypatch.setattr(LazyPformat, "__str__", counted)
    s = MemoryServer(PushServerProtocol)
    c = s.connect()
    assert c.status == 101 and calls == []
    # The deferred text is still there for whoever asks for it (a debug log line, trackTimings' report).
    assert str(LazyPformat({"a": 1})) == "{'a': 1}" and f"{LazyPformat([1])}" == "[1]"
    timings = Timings()
    timings.track("x")
    assert "'x'" in str(timings)
