"""hvac_push.transport.limits, hvac_push.transport.guard and hvac_push.transport.wire against hostile and broken
input over real sockets: every limit, every bad message, garbage on the wire.

Each test also checks that the server logged no traceback and kept serving
another client.
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList

from hvac_push.transport.limits import Limits
from hvac_push.core.points import Sample
from hvac_push.testing import connect, handshake_status
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, sleep, within
from tests.logwatch import watch_log
from tests.nbsock import BINARY, CLOSE, PING, PONG, TEXT, RawSocket, close_code, frame


def reactor():
    from twisted.internet import reactor

    return reactor


async def closed(client):
    client.sendClose()
    await within(5, client.closed)


async def still_serving(running, client, value):
    """Publish C{value} and check that C{client} (a bystander) gets it."""
    running.hub.publish(Sample("plant/probe/value", value, ts=time.time()))
    for _ in range(100):  # bounded: updates for other points may come first
        update = await within(5, client.next("update"))
        point = update["points"].get("plant/probe/value")
        if point is not None and point["value"] == value:
            return
    raise AssertionError(f"value {value} never arrived")


@pytest_twisted.ensureDeferred
async def test_messages_over_the_size_limit_close_with_1009():
    running = await start_server(limits=Limits(max_message_size=1000))
    r = reactor()
    try:
        with watch_log() as log:
            bystander = await within(5, connect(r, running.port))
            client = await within(5, connect(r, running.port))
            # Padded with JSON whitespace: an unknown field would be an error of its own.
            padded = (json.dumps({"type": "ping", "id": "x" * 100}) + " " * 800).encode()
            assert len(padded) < 1000
            client.sendMessage(padded)
            assert (await within(5, client.next("pong")))["id"] == "x" * 100
            client.sendMessage(b" " * 1001)
            _, code, _ = await within(5, client.closed)
            assert code == 1009
            # The default limit, 64 KiB, the same way.
            await still_serving(running, bystander, 1)
        assert not log.failures()
        await closed(bystander)
    finally:
        await stop_server(running)
    running = await start_server()
    try:
        client = await within(5, connect(r, running.port))
        client.sendMessage(b"[" + b" " * (64 * 1024) + b"]")
        assert (await within(5, client.closed))[1] == 1009
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_closes_with_1007(server):
    r = reactor()
    with watch_log() as log:
        bystander = await within(5, connect(r, server.port))
        raw = RawSocket(server.port)
        assert await raw.upgrade() == 101
        await raw.read_json()  # snapshot
        await raw.send(frame(TEXT, b'{"type":"ping","id":"\xff\xfe"}'))
        messages, code = await raw.read_until_close()
        assert code == 1007 and messages == []
        raw.close()
        await still_serving(server, bystander, 2)
    assert not log.failures()
    await closed(bystander)


BAD_MESSAGES = [
    (b"{this is not json", "bad_json"),
    (b"", "bad_json"),
    (b"null", "bad_message"),
    (b'"subscribe"', "bad_message"),
    (b"[1,2,3]", "bad_message"),
    (b'{"type":7}', "bad_message"),
    (b'{"type":"launch"}', "unknown_type"),
    (b'{"type":"subscribe","points":"plant/#"}', "bad_message"),
    (b'{"type":"subscribe","points":[{"a":1}]}', "bad_pattern"),
    (b'{"type":"subscribe","points":["a/b/c/d/e"]}', "bad_pattern"),
    (b'{"type":"subscribe","points":["' + b"x" * 300 + b'"]}', "bad_pattern"),
    (b'{"type":"unsubscribe","points":["never/sub/scribed"]}', "not_subscribed"),
    (b'{"type":"ping","id":1e400}', "bad_json"),
    (b'{"type":"ping","id":-1e999}', "bad_json"),
    (b'{"type":"ping","id":1' + b"0" * 5000 + b"}", "bad_json"),
    (b'{"type":"ping","id":' + str(2**60).encode() + b"}", "bad_message"),
    (b'{"type":"ping","id":Infinity}', "bad_json"),
    (b'{"type":"ping","id":' + b"[" * 20000 + b"]" * 20000 + b"}", "bad_json"),  # deep nesting
    (b'{"a":' * 10000 + b"1" + b"}" * 10000, "bad_json"),
    (b'{"type":"auth","token":null}', "bad_message"),
    (b'{"type":"resume","since":"x","epoch":5}', "bad_message"),
    (b'{"type":"history","point":"../../etc/passwd"}', "bad_message"),
    (b'{"type":"subscribe","points":["#"],"deadband_percent":5}', "unknown_field"),
    (b'{"type":"ping","id":1,"' + b"k" * 5000 + b'":1}', "unknown_field"),
]


@pytest_twisted.ensureDeferred
async def test_each_bad_message_gets_an_error_and_the_connection_keeps_working():
    running = await start_server(limits=Limits(client_rate=0))
    try:
        with watch_log() as log:
            client = await within(5, connect(reactor(), running.port))
            await within(5, client.next("snapshot"))
            for payload, code in BAD_MESSAGES:
                client.sendMessage(payload)
                error = await within(5, client.next())
                assert error["type"] == "error" and error["error"] == code, (payload[:60], error)
            client.sendMessage(b"\x00\x01binary", isBinary=True)
            assert (await within(5, client.next()))["error"] == "binary_not_supported"
            client.send_json({"type": "ping", "id": 1.5})
            assert await within(5, client.next()) == {"type": "pong", "id": 1.5}
            await still_serving(running, client, 3)
        assert not log.failures()
        await closed(client)
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_over_the_message_rate_errors_then_1008():
    running = await start_server(limits=Limits(client_rate=5, client_burst=5))
    r = reactor()
    try:
        with watch_log() as log:
            bystander = await within(5, connect(r, running.port))
            client = await within(5, connect(r, running.port))
            await within(5, client.next("snapshot"))
            for i in range(5):
                client.send_json({"type": "ping", "id": i})
            for i in range(5):
                assert (await within(5, client.next())) == {"type": "pong", "id": i}
            client.send_json({"type": "ping", "id": "over"})
            error = await within(5, client.next())
            assert error["error"] == "rate_limited"
            # A client that slows down is served again.
            await sleep(0.5)
            client.send_json({"type": "ping", "id": "after-a-pause"})
            assert (await within(5, client.next("pong")))["id"] == "after-a-pause"
            # One that keeps flooding is closed.
            for i in range(30):
                client.send_json({"type": "ping", "id": i})
            _, code, reason = await within(5, client.closed)
            assert code == 1008 and reason is not None and "rate" in reason
            stats = running.factory.guard.stats
            assert stats.policy_closes == 1 and stats.rate_limited >= 5
            print(f"\nrate limit: {stats.rate_limited} messages refused, then closed with 1008")

            # WebSocket pings count too: the refused ones get no pong.
            raw = RawSocket(running.port)
            assert await raw.upgrade() == 101
            await raw.read_json()
            for i in range(5):
                await raw.send(frame(PING, b"p%d" % i))
            for i in range(5):
                assert await raw.read_frame() == (PONG, b"p%d" % i)
            await raw.send(frame(PING, b"too-many"))
            assert json.loads((await raw.read_frame())[1])["error"] == "rate_limited"
            for i in range(20):
                await raw.send(frame(PING, b"flood"))
            frames = []
            for _ in range(100):  # bounded: 20 pings sent, a few errors, then the close
                opcode, payload = await raw.read_frame()
                frames.append(opcode)
                if opcode == CLOSE:
                    assert close_code(payload) == 1008
                    break
            assert frames[-1] == CLOSE and PONG not in frames
            raw.close()
            await still_serving(running, bystander, 4)
        assert not log.failures()
        await closed(bystander)
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_connections_per_ip_are_capped_with_429():
    running = await start_server(limits=Limits(max_connections_per_ip=2))
    r = reactor()
    try:
        first = await within(5, connect(r, running.port))
        second = await within(5, connect(r, running.port))
        refused = RawSocket(running.port)
        assert await refused.upgrade() == 429
        assert "Retry-After: 10" in refused.response_head
        refused.close()
        # Another loopback address is another IP: it has its own allowance.
        other = RawSocket(running.port, bind="127.0.0.2")
        assert await other.upgrade() == 101
        assert running.factory.guard.per_ip == {"127.0.0.1": 2, "127.0.0.2": 1}
        await closed(first)
        await eventually(lambda: running.factory.guard.per_ip.get("127.0.0.1") == 1)
        assert await within(5, handshake_status(r, running.port)) == 101
        other.close()
        await closed(second)
        await eventually(lambda: not running.factory.guard.per_ip)
        assert running.factory.stats.handshakes_denied == {429: 1}
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_a_client_that_sends_nothing_or_trickles_is_dropped_at_the_handshake_timeout():
    running = await start_server(limits=Limits(handshake_timeout=0.5))
    r = reactor()
    try:
        silent = RawSocket(running.port)
        took = await silent.wait_closed(timeout=5)
        assert 0.3 < took < 3, took
        silent.close()

        trickle = RawSocket(running.port)
        request = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
        started = time.monotonic()
        try:
            for byte in request:
                await trickle.send(bytes([byte]))
                await sleep(0.02)
                trickle._pull()
                if trickle.eof:
                    break
        except OSError:
            pass
        await trickle.wait_closed(timeout=5)
        assert time.monotonic() - started < 3
        trickle.close()

        # Finished handshakes and plain HTTP requests are not cut.
        client = await within(5, connect(r, running.port))
        # A ready server with no producers: plain HTTP is answered in full, not cut by the handshake timeout.
        assert await within(5, handshake_status(r, running.port, "/healthz")) == 200
        await sleep(1.0)
        client.send_json({"type": "ping", "id": "alive"})
        assert (await within(5, client.next("pong")))["id"] == "alive"
        assert running.factory.guard.stats.handshake_timeouts == 2
        await closed(client)
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_subscriptions_per_connection_are_capped():
    running = await start_server(limits=Limits(max_subscriptions=3))
    r = reactor()
    try:
        assert await within(5, handshake_status(r, running.port, "/ws?points=a/b/c,a/b/d,a/b/e,a/b/f")) == 400
        client = await within(5, connect(r, running.port, "/ws?points=a/b/c,a/b/d"))
        await within(5, client.next("snapshot"))
        client.send_json({"type": "subscribe", "points": ["a/b/d", "a/b/e"]})
        assert (await within(5, client.next()))["type"] == "snapshot"
        client.send_json({"type": "subscribe", "points": ["a/b/f"]})
        error = await within(5, client.next())
        assert error["error"] == "too_many_subscriptions"
        client.send_json({"type": "unsubscribe", "points": ["a/b/c"]})
        client.send_json({"type": "subscribe", "points": ["a/b/f"]})
        assert (await within(5, client.next()))["type"] == "snapshot"
        [proto] = running.factory.clients
        assert proto.subscription.key == {"a/b/d", "a/b/e", "a/b/f"}
        await closed(client)
    finally:
        await stop_server(running)


# -- garbage on the wire ----------------------------------------------------------

BAD_HTTP = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello on the plain port
    b"GET /ws\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",  # no key, no version
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 99\r\n\r\n",
    b"GET /ws?points=%ZZ%00 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: a, a\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /ws HTTP/1.1\r\n" + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n",
    b"GET /ws HTTP/1.1\r\n" + b"X: y\r\n" * 600 + b"\r\n",
    b"\r\n\r\n\r\n",
    b"GET \xff\xfe HTTP/1.1\r\nHost: \x00\r\n\r\n",
]

#: Frames after a good upgrade, with the close code the RFC asks for.
BAD_FRAMES = [
    (frame(TEXT, b'{"type":"ping"}', mask=False), 1002),  # clients must mask
    (frame(TEXT, b"{}", rsv=4), 1002),  # RSV bits without an extension
    (frame(0x3, b"x"), 1002),  # reserved data opcode
    (frame(0xB, b"x"), 1002),  # reserved control opcode
    (frame(PING, b"p" * 126), 1002),  # control frame too long
    (frame(PING, b"p", fin=False), 1002),  # fragmented control frame
    (frame(0x0, b"orphan continuation"), 1002),
    (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002),  # new message inside a fragmented one
    (frame(TEXT, b"", length=2**63 - 1), 1009),  # absurd declared length
    (frame(TEXT, b"", length=70_000), 1009),
    (frame(TEXT, "\u00e9".encode()[:1]), 1007),
    # A malformed close frame (code 999; a reason that is not UTF-8): Autobahn
    # sends 1002/1007 but, taking the bad frame as the reply, aborts the TCP
    # connection at once, so the code may never arrive. The connection ends.
    (frame(CLOSE, b"\x03\xe7"), None),
    (frame(CLOSE, b"\x03\xe8\xff"), None),
    (frame(BINARY, b"x", fin=False) + frame(0x0, b"\xff" * 10), None),  # a fine binary message: an error reply
]


async def _ends(raw: RawSocket, timeout: float, frames: bool) -> int | None:
    """Read until the server closes; the close code if a close frame came (with C{frames})."""
    code = None
    deadline = time.monotonic() + timeout
    while not raw.eof:
        raw._pull()
        if not frames:
            raw.buffer = b""
        while frames and raw._frame_ready():
            parsed = raw._parse(consume=True)
            assert parsed is not None
            if parsed[0] == CLOSE:
                code = close_code(parsed[1])
                await raw.send(frame(CLOSE, parsed[1][:2]))
        if time.monotonic() > deadline:
            raise TimeoutError("server did not end the connection")
        await sleep(0.005)
    return code


@pytest_twisted.ensureDeferred
async def test_garbage_before_and_after_the_upgrade_never_hurts_other_clients():
    from twisted.internet.task import LoopingCall

    rng = random.Random(4)
    running = await start_server(
        limits=Limits(handshake_timeout=1.0),
        ws_options={"autoPingInterval": 1.0, "autoPingTimeout": 2.0, "closeHandshakeTimeout": 1.0},
    )
    r = reactor()
    counter = iter(range(10**6))
    published: list[int] = []

    def publish() -> None:
        value = next(counter)
        published.append(value)
        running.hub.publish(Sample("plant/probe/counter", value, ts=time.time()))

    ticker = LoopingCall(publish)
    ticker.clock = r
    try:
        with watch_log() as log:
            watcher = await within(5, connect(r, running.port))
            await within(5, watcher.next("snapshot"))
            seen: list[int] = []
            watcher.onMessage = _recorder(watcher, seen)  # type: ignore[method-assign]
            ticker.start(0.02)

            cases: list[tuple[str, bytes, bool, int | None]] = []
            for payload in BAD_HTTP:
                cases.append(("http", payload, False, None))
            for _ in range(15):
                cases.append(("random-before", os.urandom(rng.randrange(1, 3000)), False, None))
            for payload, code in BAD_FRAMES:
                cases.append(("frame", payload, True, code))
            for _ in range(15):
                cases.append(("random-after", os.urandom(rng.randrange(1, 3000)), True, None))

            async def one(kind: str, payload: bytes, upgrade: bool, expected: int | None) -> tuple[str, int | None]:
                raw = RawSocket(running.port)
                try:
                    if upgrade:
                        assert await raw.upgrade() == 101
                        await raw.read_json()
                    try:
                        await raw.send(payload)
                    except OSError:
                        return kind, None  # the server already hung up
                    code = await _ends(raw, timeout=8, frames=upgrade)
                    if expected is not None:
                        assert code == expected, (kind, payload[:40], code)
                    return kind, code
                finally:
                    raw.close()

            started = time.monotonic()
            results = []
            for first in range(0, len(cases), 10):  # 10 at a time: well inside the listen backlog
                batch = cases[first : first + 10]
                results += await within(30, DeferredList(
                    [Deferred.fromCoroutine(one(*case)) for case in batch], consumeErrors=True))
            failures = [(case[0], case[1][:40], result) for case, (ok, result) in zip(cases, results) if not ok]
            assert not failures, "\n".join(repr((k, p[:30], str(getattr(f, "value", f))[:60])) for k, p, f in failures)
            codes = [result[1] for _, result in results]
            print(f"\ngarbage: {len(cases)} connections ended in {time.monotonic() - started:.1f}s; "
                  f"close codes {sorted({c for c in codes if c is not None})}")
            # The watcher kept getting the counter, in order, the whole time.
            ticker.stop()
            await eventually(lambda: seen and seen[-1] == published[-1], timeout=5)
            print(f"watcher: {len(seen)} counter updates, last {seen[-1]} of {published[-1]}")
            assert seen == sorted(seen) and len(seen) > 20
            await eventually(lambda: running.factory.connections == {_server_side(running, watcher)})
        assert not log.failures(), log.failures()[:3]
        await closed(watcher)
    finally:
        if ticker.running:
            ticker.stop()
        await stop_server(running)


def _recorder(client, seen):
    original = client.onMessage

    def on_message(payload: bytes, isBinary: bool) -> None:
        original(payload, isBinary)
        message = json.loads(payload)
        point = message.get("points", {}).get("plant/probe/counter")
        if point is not None:
            seen.append(point["value"])

    return on_message


def _server_side(running, client):
    """The server's protocol for C{client}, matched by the client's local port."""
    port = client.transport.getHost().port
    for proto in running.factory.connections:
        if proto.transport.getPeer().port == port:
            return proto
    return None


#: Handshake queries whose numbers are not ASCII digits: 400, never a 500 or a misread.
HOSTILE_QUERIES = [
    "/ws?since=%C2%B2&epoch=x",  # superscript two: isdigit() but not int()
    "/ws?since=1&epoch=x&alarm_seq=%C2%B3",
    "/ws?since=%D9%A1&epoch=x",  # Arabic-Indic one: int() would read 1
    "/ws?since=%EF%BC%91&epoch=x",  # fullwidth one
    "/ws?since=-1&epoch=x",
    "/ws?since=1e3&epoch=x",
    "/ws?since=%00&epoch=x",
    "/ws?since=" + "9" * 40 + "&epoch=x",
]


@pytest_twisted.ensureDeferred
async def test_non_ascii_digits_in_the_query_get_400_without_a_traceback(server):
    r = reactor()
    with watch_log() as log:
        bystander = await within(5, connect(r, server.port))
        for path in HOSTILE_QUERIES:
            assert await within(5, handshake_status(r, server.port, path)) == 400, path
        assert server.factory.stats.handshakes_denied == {400: len(HOSTILE_QUERIES)}
        resumed = await within(5, connect(r, server.port, f"/ws?since=0&epoch={server.hub.epoch}&alarm_seq=0"))
        assert (await within(5, resumed.next()))["type"] == "update"
        await still_serving(server, bystander, 5)
    assert not log.failures()
    await closed(resumed)
    await closed(bystander)
