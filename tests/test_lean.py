"""hvac_push.transport.lean: an open client keeps no handshake text, no private traffic counters and no copy of
the factory's options, and still honours them."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from typing import Any

import pytest
import pytest_twisted

from hvac_push.core.points import Sample
from hvac_push.testing import TEXT, MemoryServer
from hvac_push.transport.lean import SHARED_TRAFFIC_STATS, QueueUntilUsed, compact_attributes
from hvac_push.transport.limits import Limits
from hvac_push.transport.protocol import PushServerProtocol
from tests.conftest import start_server, stop_server
from tests.nbsock import PING, PONG, RawSocket, frame


def test_an_open_client_drops_its_upgrade_request_and_shares_the_traffic_counters():
    s = MemoryServer(PushServerProtocol)
    s.publish(Sample("p/u/a", 1.0, ts=1.0))
    one, two = s.connect("/ws?points=p/u/%23"), s.connect()
    for c in (one, two):
        protocol: Any = c.protocol
        assert protocol.http_request_data is None and protocol.http_response_data is None
        assert "http_request_data" not in vars(protocol) and "http_response_data" not in vars(protocol)
        assert protocol.http_headers == {}
        assert protocol.trafficStats is SHARED_TRAFFIC_STATS
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


def _close_code_of(c: Any) -> int | None:
    """The status code of the close frame the server sent this in-memory client, if any."""
    for f in c.frames():
        if f.opcode == 0x8:
            code: int | None = f.close_code
            return code
    return None


def _ping_of(size: int) -> bytes:
    """A client ping of exactly C{size} bytes (JSON whitespace as padding)."""
    body = b'{"type":"ping","id":1}'
    return body + b" " * (size - len(body))


def test_an_open_client_holds_no_copy_of_the_factory_options() -> None:
    s = MemoryServer(PushServerProtocol)
    c = s.connect()
    protocol: Any = c.protocol
    own = vars(protocol)
    for name in PushServerProtocol.CONFIG_ATTRS:
        assert name not in own, name
        # Read from the class: the very objects the factory holds (a function option stays a plain function).
        assert getattr(protocol, name) is getattr(s.factory, name), name
    assert isinstance(protocol, PushServerProtocol) and type(protocol).__name__ == "PushServerProtocol"
    # The point of it: the attribute dictionary stays in the smallest size class that holds it (3.3 KB before).
    assert sys.getsizeof(own) <= 1024, (len(own), sys.getsizeof(own))
    # Flags Autobahn set to their initial value are read from the class too.
    assert "wasClean" not in own and protocol.wasClean is False and protocol.closeHandshakeTimeoutCall is None
    # A client that sends messages too: what Autobahn keeps per message still fits.
    c.send_json({"type": "ping", "id": 1})
    assert c.messages()[-1] == {"type": "pong", "id": 1}
    assert sys.getsizeof(vars(protocol)) <= 1024, (len(vars(protocol)), sys.getsizeof(vars(protocol)))


def test_a_lean_client_still_honours_the_factory_message_size_limit() -> None:
    s = MemoryServer(PushServerProtocol, limits=Limits(max_message_size=300))
    c = s.connect()
    c.send_frame(TEXT, _ping_of(300))
    assert c.messages()[-1] == {"type": "pong", "id": 1}
    c.send_frame(TEXT, _ping_of(301))
    assert _close_code_of(c) == 1009


def test_a_subclass_that_sets_an_option_keeps_it_and_so_does_a_connection_that_sets_its_own() -> None:
    class Strict(PushServerProtocol):
        maxMessagePayloadSize = 200  # per class: wins over the factory's 64 KiB, as with Autobahn's copies

    s = MemoryServer(Strict)
    strict = s.connect()
    assert "maxMessagePayloadSize" not in vars(strict.protocol) and strict.protocol.maxMessagePayloadSize == 200
    strict.send_frame(TEXT, _ping_of(201))
    assert _close_code_of(strict) == 1009

    t = MemoryServer(PushServerProtocol)
    narrowed, other = t.connect(), t.connect()
    narrowed.protocol.maxMessagePayloadSize = 150  # one connection changes its own option
    other.send_frame(TEXT, _ping_of(400))
    assert other.messages()[-1] == {"type": "pong", "id": 1}
    narrowed.send_frame(TEXT, _ping_of(151))
    assert _close_code_of(narrowed) == 1009 and _close_code_of(other) is None


def test_options_changed_on_the_factory_reach_later_connections_only() -> None:
    s = MemoryServer(PushServerProtocol)
    before = s.connect()
    s.factory.setProtocolOptions(maxMessagePayloadSize=200, maxFramePayloadSize=200)
    after = s.connect()
    assert before.protocol.maxMessagePayloadSize == 64 * 1024 and after.protocol.maxMessagePayloadSize == 200
    before.send_frame(TEXT, _ping_of(400))
    assert before.messages()[-1] == {"type": "pong", "id": 1}
    after.send_frame(TEXT, _ping_of(400))
    assert _close_code_of(after) == 1009


def test_a_large_reply_past_the_message_limit_leaves_no_option_copy_behind() -> None:
    s = MemoryServer(PushServerProtocol, limits=Limits(max_message_size=200))
    c = s.connect()
    c.protocol.reply(b'{"type":"x","pad":"' + b"y" * 500 + b'"}')  # replies are sent whole, whatever the limit
    assert len(c.frames()[-1].payload) > 500
    assert "maxMessagePayloadSize" not in vars(c.protocol) and c.protocol.maxMessagePayloadSize == 200


def test_the_send_queue_is_a_placeholder_until_something_is_queued() -> None:
    s = MemoryServer(PushServerProtocol)
    c = s.connect()
    protocol: Any = c.protocol
    placeholder = protocol.send_queue
    assert type(placeholder) is QueueUntilUsed and len(placeholder) == 0 and list(placeholder) == []
    with pytest.raises(IndexError):
        placeholder.popleft()
    # A chopped or synchronous send queues: the connection gets a deque of its own, holding the item.
    protocol.send_queue.append((b"data", True))
    assert type(protocol.send_queue) is deque and list(protocol.send_queue) == [(b"data", True)]


@pytest_twisted.ensureDeferred
async def test_a_lean_client_gets_the_factory_auto_pings_and_the_size_limit_over_a_real_socket() -> None:
    running = await start_server(limits=Limits(max_message_size=500), ws_options={"autoPingInterval": 0.2})
    raw = RawSocket(running.port)
    try:
        assert await raw.upgrade() == 101
        await raw.read_json()  # the snapshot
        opcode, payload = await raw.read_frame(timeout=5)
        assert opcode == PING
        await raw.send(frame(PONG, payload))
        assert (await raw.read_frame(timeout=5))[0] == PING  # pinging goes on, answered or not
        # The server side, over a real TCP transport: both attribute dictionaries compact, and updates still flow.
        (server_side,) = running.factory.clients
        assert sys.getsizeof(vars(server_side)) <= 1024 and sys.getsizeof(vars(server_side.transport)) <= 512
        running.hub.publish(Sample("plant/probe/value", 42.0, ts=time.time()))
        for _ in range(50):  # bounded; pings may come between
            opcode, payload = await raw.read_frame(timeout=5)
            if opcode == TEXT:
                assert json.loads(payload)["points"]["plant/probe/value"]["value"] == 42.0
                break
        else:
            raise AssertionError("the update never arrived")
        await raw.send(frame(TEXT, _ping_of(501)))
        assert (await raw.read_until_close())[1] == 1009
    finally:
        raw.close()
        await stop_server(running)


def test_compacting_drops_only_attributes_identical_to_the_class_ones_and_shrinks_the_dictionary() -> None:
    class Holder:
        offset = 0
        data = b""
        peer: object = None
        items: list[int] = []
        shared: list[int] = []

        def method(self) -> None:
            pass

    h = Holder()
    h.offset, h.data, h.peer, h.items = 0, b"", "tcp4:1.2.3.4:5", []  # the list is equal to the class's, not it
    h.shared = Holder.shared  # the class's own (mutable) object: the same whether read from the instance or the class
    vars(h)["method"] = Holder.method  # a function on the instance reads unbound; from the class it would be bound: kept
    for n in range(60):  # grown as a long-lived connection's dictionary grows
        setattr(h, f"extra{n}", n)
    for n in range(60):
        delattr(h, f"extra{n}")
    grown = sys.getsizeof(vars(h))
    compact_attributes(h)
    assert sorted(vars(h)) == ["items", "method", "peer"] and h.offset == 0 and h.shared is Holder.shared and h.data == b"" and h.peer == "tcp4:1.2.3.4:5"
    assert sys.getsizeof(vars(h)) < grown / 2
    h.offset = 7  # written again: an attribute of its own, as before
    assert h.offset == 7 and Holder.offset == 0
