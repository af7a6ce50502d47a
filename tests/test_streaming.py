"""hvac_push.transport.streaming: a large message goes in fragments, written only as the client reads.

The transport here behaves like Twisted's: it pauses its producer once more
than 64 KiB wait unread, and resumes it when the client has read everything.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.core.points import AlarmLimits, Sample
from hvac_push.testing import (
    CLOSE,
    TEXT,
    MemoryServer,
    decode_frames,
    encode_frame,
    json_object,
    text_messages,
    upgrade_request,
)
from hvac_push.transport import streaming
from hvac_push.transport.limits import DEFAULT_LIMITS, Limits
from hvac_push.transport.protocol import PushServerProtocol
from hvac_push.transport.streaming import FRAGMENT_SIZE, STREAM_THRESHOLD, LazyFragments, fragment_frames

#: Enough points for a snapshot well above the threshold (about 100 bytes each).
POINTS = 6000
CONTINUATION = 0x0


class ReadingTransport(StringTransport):
    """A transport that keeps every write object and pauses its producer as Twisted's does."""

    buffer_size = 1 << 16

    def __init__(self, peer: IPv4Address) -> None:
        super().__init__(peerAddress=peer)
        self.writes: list[bytes] = []
        self.unread = 0
        self.read_bytes = b""

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(data)
        self.unread += len(data)
        if self.producer is not None and self.unread > self.buffer_size and not self.producerState == "paused":
            self.producerState = "paused"
            self.producer.pauseProducing()

    def read(self) -> None:
        """The client reads everything written so far; the transport resumes its producer."""
        self.unread = 0
        if self.producer is not None and self.producerState == "paused":
            self.producerState = "producing"
            self.producer.resumeProducing()


class Reader:
    """One client of a MemoryServer on a L{ReadingTransport}."""

    def __init__(self, server: MemoryServer[PushServerProtocol], path: str = "/ws", port: int = 1) -> None:
        peer = IPv4Address("TCP", "127.0.0.1", 50000 + port)
        protocol: Any = server.factory.buildProtocol(peer)
        self.protocol: PushServerProtocol = protocol
        self.transport = ReadingTransport(peer)
        protocol.makeConnection(self.transport)
        protocol.dataReceived(upgrade_request(path))

    def frames(self) -> list[Any]:
        _, _, rest = self.transport.value().partition(b"\r\n\r\n")
        return decode_frames(rest)[0]

    def messages(self) -> list[dict[str, Any]]:
        return [json_object(m) for m in text_messages(self.frames())]

    def read_all(self, limit: int = 1000) -> int:
        """Read until the server writes nothing more; how many reads that took (bounded)."""
        for reads in range(1, limit):
            before = len(self.transport.writes)
            self.transport.read()
            if len(self.transport.writes) == before:
                return reads
        raise AssertionError("the server kept writing")

    def send_json(self, message: str) -> None:
        self.protocol.dataReceived(encode_frame(TEXT, message.encode()))


def big_server(points: int = POINTS, limits: Limits = DEFAULT_LIMITS) -> MemoryServer[PushServerProtocol]:
    s = MemoryServer(PushServerProtocol, limits=limits)
    s.publish(*[Sample(f"plant/unit-{i // 7}/point-{i % 7}", float(i), "°C", ts=1.0) for i in range(points)])
    return s


def test_fragment_frames_are_one_text_message_of_continuations_ending_with_fin():
    payload = bytes(range(256)) * 1000  # 256,000 bytes: 4 fragments
    frames, rest = decode_frames(b"".join(fragment_frames(payload, 65536)))
    assert rest == b"" and [(f.opcode, f.fin) for f in frames] == [
        (TEXT, False), (CONTINUATION, False), (CONTINUATION, False), (CONTINUATION, True)
    ]
    assert b"".join(f.payload for f in frames) == payload
    assert list(LazyFragments(payload, 65536)) == list(fragment_frames(payload, 65536))
    assert fragment_frames(b"{}") == (b"\x81\x02{}",)  # small: one ordinary frame


def test_a_large_opening_snapshot_is_written_one_fragment_per_read():
    s = big_server()
    client = Reader(s)
    assert client.protocol.sending_fragments and client.protocol.paused
    frames = client.frames()
    assert [(f.opcode, f.fin) for f in frames] == [(TEXT, False)]  # one fragment, then the transport paused
    reads = client.read_all()
    frames = client.frames()
    assert len(frames) > STREAM_THRESHOLD // FRAGMENT_SIZE and reads >= len(frames) - 1
    assert all(len(f.payload) == FRAGMENT_SIZE for f in frames[:-1])
    assert frames[0].opcode == TEXT and all(f.opcode == CONTINUATION for f in frames[1:])
    assert [f.fin for f in frames] == [False] * (len(frames) - 1) + [True]
    (snapshot,) = client.messages()
    assert snapshot["type"] == "snapshot" and len(snapshot["points"]) == POINTS
    done: PushServerProtocol = client.protocol  # a fresh name: mypy narrowed the attributes above
    assert not done.sending_fragments and not done.paused


def test_updates_made_during_the_fragments_wait_and_then_arrive_as_one_catch_up():
    s = big_server()
    client = Reader(s)
    client.transport.read()  # some fragments read, not all
    for k in range(3):
        s.publish(Sample("plant/unit-0/point-0", 100.0 + k, "°C", ts=2.0 + k), Sample(f"plant/unit-1/point-{k}", -1.0, ts=2.0))
        s.advance(0)
        s.advance(0.1)  # the poll too
    assert len(client.messages()) == 0  # nothing but fragments of the snapshot so far
    assert s.factory.stats.skipped_paused > 0
    client.read_all()
    s.advance(0)
    snapshot, update = client.messages()
    assert snapshot["type"] == "snapshot" and snapshot["points"]["plant/unit-0/point-0"]["value"] == 0.0
    assert update["type"] == "update" and update["version"] == s.hub.version
    assert update["points"]["plant/unit-0/point-0"]["value"] == 102.0
    assert set(update["points"]) == {"plant/unit-0/point-0", "plant/unit-1/point-0", "plant/unit-1/point-1",
                                     "plant/unit-1/point-2"}


def test_replies_wait_behind_the_last_fragment_and_keep_their_order():
    s = big_server()
    client = Reader(s)
    client.send_json('{"type":"ping","id":"a"}')
    client.send_json('{"type":"ping","id":"b"}')
    client.transport.read()
    client.send_json('{"type":"nonsense","id":"c"}')
    assert len(client.messages()) == 0
    client.read_all()
    kinds = [(m["type"], m.get("id")) for m in client.messages()]
    assert kinds == [("snapshot", None), ("pong", "a"), ("pong", "b"), ("error", "c")]


def test_a_large_reply_goes_in_fragments_and_what_follows_waits_for_it():
    s = big_server()
    client = Reader(s, "/ws?points=plant/unit-0/%23")  # a small opening: whole
    client.read_all()
    assert len(client.frames()) == 1
    client.send_json('{"type":"subscribe","points":["#"],"id":"big"}')
    client.send_json('{"type":"ping","id":"after"}')
    assert client.protocol.sending_fragments
    client.read_all()
    frames = client.frames()
    assert frames[1].opcode == TEXT and not frames[1].fin and frames[-2].fin
    opening, added, pong = client.messages()
    assert added["id"] == "big" and len(added["points"]) == POINTS - 7
    assert pong == {"type": "pong", "id": "after"}


def test_clients_opening_together_are_written_the_same_shared_fragment_objects():
    s = big_server()
    first, second = Reader(s, port=1), Reader(s, port=2)
    first.read_all()
    second.read_all()
    assert s.factory.snapshots.hits == 1
    ours = first.transport.writes[1:]  # after the HTTP response
    theirs = second.transport.writes[1:]
    assert len(ours) == len(theirs) > 4
    assert all(a is b for a, b in zip(ours, theirs))  # no copy per client


def test_a_close_mid_stream_writes_no_more_fragments_and_the_rest_is_dropped():
    s = big_server()
    client = Reader(s)
    client.send_json('{"type":"ping","id":"never"}')
    client.protocol.dataReceived(encode_frame(CLOSE, b"\x03\xe8"))  # the client closes (1000)
    assert not client.protocol.sending_fragments
    client.read_all()
    frames = client.frames()
    assert [(f.opcode, f.fin) for f in frames] == [(TEXT, False), (CLOSE, True)]  # close may cut a message
    s.publish(Sample("plant/unit-0/point-0", 5.0))
    s.advance(0)
    assert len(client.frames()) == 2


def test_a_connection_lost_mid_stream_drops_the_rest_and_leaves_the_fan_out():
    s = big_server()
    client = Reader(s)
    client.protocol.connectionLost()
    assert not client.protocol.sending_fragments
    written = len(client.transport.writes)
    client.protocol.resumeProducing()
    s.publish(Sample("plant/unit-0/point-0", 5.0))
    s.advance(0)
    assert len(client.transport.writes) == written and not s.factory.clients


def test_a_client_that_piles_up_replies_behind_its_snapshot_is_closed_try_again_later():
    s = big_server(limits=Limits(client_rate=0))  # no message-rate limit: the queue's bound is what acts
    client = Reader(s)
    for k in range(streaming.MAX_WAITING_REPLIES + 1):
        client.send_json(f'{{"type":"ping","id":"{k}"}}')
    frames = client.frames()
    assert frames[-1].opcode == CLOSE and frames[-1].payload[:2] == (1013).to_bytes(2, "big")
    assert not client.protocol.sending_fragments
    s.advance(5)  # the close grace: the client is aborted


def test_alarm_transitions_during_the_fragments_are_replayed_after_the_values_that_raised_them():
    s = big_server()
    engine = AlarmEngine(s.hub, s.clock)
    point = "plant/unit-0/point-1"
    engine.set_limits(point, AlarmLimits(high=25.0))
    s.factory.attach_alarms(engine)
    client = Reader(s)
    client.transport.read()
    s.publish(Sample(point, 30.0, "°C", ts=2.0))  # raises the alarm: its transition comes at once
    s.publish(Sample(point, 20.0, "°C", ts=3.0))  # and returns
    client.send_json('{"type":"subscribe","points":["extra/#"],"id":"sub"}')  # a reply with (no) values, at version 2
    s.advance(0)
    assert engine.seq == 2 and len(client.messages()) == 0
    client.read_all()
    kinds = [m["type"] for m in client.messages()]
    # Replies first (their values are the oldest), then what changed, then the alarms it raised.
    assert kinds == ["snapshot", "snapshot", "update", "alarm", "alarm"]
    reply, update, active, returned = client.messages()[1:]
    assert reply["id"] == "sub" and reply["version"] <= update["version"] == s.hub.version
    assert update["points"][point]["value"] == 20.0
    assert (active["seq"], active["alarm"]["state"]) == (1, "active")
    assert (returned["seq"], returned["alarm"]["state"]) == (2, "returned")
    s.advance(0)
    assert len(client.messages()) == 5  # the catch-up was that update: nothing more to send
