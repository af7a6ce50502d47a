"""hvac_push.testing: the WebSocket frame codec, and the in-memory server as someone who subclasses the
protocol uses it."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from hvac_push.core.points import AlarmLimits, Sample
from hvac_push.ops.service import PushService
from hvac_push.testing import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    QUIET_WS_OPTIONS,
    TEXT,
    Frame,
    MemoryServer,
    decode_frame,
    decode_frames,
    encode_frame,
    server_messages,
)
from hvac_push.transport.protocol import PushServerProtocol
from hvac_push.transport.wire import WireError

# -- frames, crafted byte by byte (the first five are RFC 6455's own examples, section 5.7) ----

HELLO_UNMASKED = bytes.fromhex("810548656c6c6f")
HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")
HELLO_IN_TWO = bytes.fromhex("010348656c") + bytes.fromhex("80026c6f")
PING_HELLO = bytes.fromhex("890548656c6c6f")
PONG_HELLO_MASKED = bytes.fromhex("8a8537fa213d7f9f4d5158")


def test_rfc_examples_decode_masked_and_unmasked():
    assert decode_frame(HELLO_UNMASKED) == (Frame(TEXT, b"Hello"), 7)
    assert decode_frame(HELLO_MASKED) == (Frame(TEXT, b"Hello", masked=True), 11)
    assert decode_frame(PING_HELLO) == (Frame(PING, b"Hello"), 7)
    assert decode_frame(PONG_HELLO_MASKED) == (Frame(PONG, b"Hello", masked=True), 11)
    frames, rest = decode_frames(HELLO_IN_TWO)
    assert frames == [Frame(TEXT, b"Hel", fin=False), Frame(CONTINUATION, b"lo")] and rest == b""


def test_16_and_64_bit_lengths():
    medium = b"\x82\x7e\x01\x00" + bytes(range(256))
    assert decode_frame(medium) == (Frame(BINARY, bytes(range(256))), len(medium))
    large = b"\x82\x7f" + (65536).to_bytes(8, "big") + b"x" * 65536
    assert decode_frame(large) == (Frame(BINARY, b"x" * 65536), len(large))


def only_frame(data: bytes) -> Frame:
    """The one frame that C{data} holds, all of it."""
    decoded = decode_frame(data)
    assert decoded is not None and decoded[1] == len(data)
    return decoded[0]


def test_close_frames_with_a_code_a_reason_or_nothing():
    going_away = only_frame(bytes([0x88, 7]) + (1001).to_bytes(2, "big") + b"going")
    assert going_away.opcode == CLOSE and (going_away.close_code, going_away.close_reason) == (1001, "going")
    masked = only_frame(encode_frame(CLOSE, (1000).to_bytes(2, "big")))
    assert masked.masked and (masked.close_code, masked.close_reason) == (1000, "")
    assert only_frame(b"\x88\x00").close_code is None


def test_partial_input_decodes_to_nothing_until_the_last_byte_arrives():
    data = HELLO_MASKED + b"\x82\x7e\x01\x00" + bytes(256)
    for cut in range(len(HELLO_MASKED)):
        assert decode_frame(data[:cut]) is None
        assert decode_frames(data[:cut]) == ([], data[:cut])
    for cut in range(len(HELLO_MASKED) + 1, len(data)):
        frames, rest = decode_frames(data[:cut])
        assert frames == [Frame(TEXT, b"Hello", masked=True)] and rest == data[len(HELLO_MASKED) : cut]
    assert decode_frame(data, len(HELLO_MASKED)) == (Frame(BINARY, bytes(256)), len(data))


@given(
    st.sampled_from([TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION]),
    st.sampled_from([0, 1, 125, 126, 127, 65535, 65536]),
    st.booleans(),
    st.booleans(),
)
def test_encode_and_decode_agree_at_every_length_boundary(opcode, size, mask, fin):
    payload = bytes(i % 251 for i in range(size))
    encoded = encode_frame(opcode, payload, mask=mask, fin=fin)
    assert decode_frame(encoded) == (Frame(opcode, payload, fin=fin, masked=mask), len(encoded))


def test_server_messages_joins_fragments_and_skips_control_and_binary_frames():
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    body = (
        encode_frame(TEXT, b'{"a":', mask=False, fin=False)
        + PING_HELLO
        + encode_frame(CONTINUATION, b"1}", mask=False)
        + encode_frame(BINARY, b"\x00", mask=False)
        + encode_frame(TEXT, b'{"b":2}', mask=False)
        + b"\x81\x7e\x01"  # the start of a frame still on its way
    )
    assert server_messages(head + body) == [{"a": 1}, {"b": 2}]
    assert server_messages(body) == []  # no HTTP response yet: nothing is a frame


# -- the in-memory server, as someone who subclasses the protocol uses it ----------------------


class Thermostat(PushServerProtocol):
    """A subclass as a user would write one: its own admission rule and its own message type."""

    customMessageTypes: ClassVar[frozenset[str]] = frozenset({"setpoint"})

    def __init__(self) -> None:
        super().__init__()
        self.setpoints: dict[str, float] = {}

    def acceptHandshake(self, request: ConnectionRequest) -> None:
        if request.headers.get("x-site") != "north":
            raise ConnectionDeny(403, "wrong site")

    def onCustomMessage(self, kind: str, message: dict[str, Any]) -> None:
        point, value = message.get("point"), message.get("value")
        if not isinstance(point, str) or not isinstance(value, (int, float)) or not self.may_read(point):
            raise WireError("bad_message", "setpoint needs a readable point and a number")
        self.setpoints[point] = float(value)
        self.send_bytes(json.dumps({"type": "setpoint_ok", "point": point, "value": value}).encode())


def test_a_protocol_subclass_with_its_own_message_type_is_testable_in_memory():
    s = MemoryServer(Thermostat, interval=1.0)
    s.publish(Sample("p/u/sp", 20.0, ts=1.0), Sample("q/u/sp", 5.0, ts=1.0))
    assert s.connect("/ws?points=p/%23").status == 403
    c = s.connect("/ws?points=p/%23", headers={"X-Site": "north"})
    assert c.status == 101
    assert set(c.messages()[0]["points"]) == {"p/u/sp"}
    c.send_json({"type": "setpoint", "point": "p/u/sp", "value": 21.5})
    assert c.messages()[-1] == {"type": "setpoint_ok", "point": "p/u/sp", "value": 21.5}
    assert c.protocol.setpoints == {"p/u/sp": 21.5}  # c.protocol is typed as a Thermostat
    c.send_json({"type": "setpoint", "point": "p/u/sp"})
    assert c.messages()[-1]["error"] == "bad_message"
    s.publish(Sample("p/u/sp", 21.5, ts=2.0))
    s.advance(0)
    assert c.messages()[-1]["points"]["p/u/sp"]["value"] == 21.5
    c.send_frame(CLOSE, (1000).to_bytes(2, "big"))
    closing = c.frames()[-1]
    assert closing.opcode == CLOSE and closing.close_code == 1000
    c.disconnect()
    assert c.protocol not in s.factory.connections


def test_a_whole_push_service_runs_in_memory_alarms_included():
    push = PushService(MemoryReactorClock(), ws_options=QUIET_WS_OPTIONS)
    s = MemoryServer(Thermostat, service=push)
    push.set_alarm_limits("p/u/t", AlarmLimits(high=30.0))
    c = s.connect(headers={"X-Site": "north"})
    s.publish(Sample("p/u/t", 35.0))
    s.advance(0)
    kinds = [m["type"] for m in c.messages()]
    assert kinds[0] == "snapshot" and "alarm" in kinds and "update" in kinds
    assert push.running


def test_the_harness_refuses_a_service_whose_autobahn_timers_would_use_the_real_reactor():
    with pytest.raises(ValueError, match="QUIET_WS_OPTIONS"):
        MemoryServer(PushServerProtocol, service=PushService(MemoryReactorClock()))
    with pytest.raises(TypeError, match="MemoryReactorClock"):
        MemoryServer(PushServerProtocol, service=PushService(Clock()))
