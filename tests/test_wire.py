"""hvac_push.transport.wire: message shapes, and client messages parsed into commands or typed errors."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvac_push.transport import wire
from hvac_push.core.points import Point


def test_update_frame_has_the_documented_shape():
    points = [Point("p/u/a", 21.4, "°C", 1764031234.123, "ok", 7), Point("p/u/b", True, "", 1.0, "ok", 8)]
    message = json.loads(wire.encode_update("E", 8, points))
    assert message == {
        "type": "update",
        "epoch": "E",
        "version": 8,
        "points": {
            "p/u/a": {"value": 21.4, "unit": "°C", "ts": 1764031234.123, "version": 7, "status": "ok"},
            "p/u/b": {"value": True, "unit": "", "ts": 1.0, "version": 8, "status": "ok"},
        },
    }
    assert json.loads(wire.encode_snapshot("E", 8, []))["type"] == "snapshot"


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"{bad", "bad_json"),
        (b"[1,2]", "bad_message"),
        (b'{"no":"type"}', "bad_message"),
        (b'{"type":"launch"}', "unknown_type"),
        (b'{"type":"subscribe"}', "bad_message"),
        (b'{"type":"subscribe","points":"a/b/c"}', "bad_message"),
        (b'{"type":"subscribe","points":[1]}', "bad_pattern"),
        (b'{"type":"subscribe","points":["a/#/c"]}', "bad_pattern"),
        (b'{"type":"ping","id":{"x":1}}', "bad_message"),
        (b'{"type":"ping","id":NaN}', "bad_json"),
        (b'{"type":"ping","id":1' + b"0" * 5000 + b"}", "bad_json"),
        (b"[" * 100_000 + b"]" * 100_000, "bad_json"),
        (b"\xff\xfe", "bad_json"),
    ],
)
def test_bad_client_messages_become_typed_errors(payload, code):
    with pytest.raises(wire.WireError) as e:
        wire.parse_client_message(payload)
    assert e.value.code == code


def test_good_client_messages_become_commands():
    sub = wire.parse_client_message(b'{"type":"subscribe","points":["plant/+/supply_temp"]}')
    assert isinstance(sub, wire.Subscribe) and sub.patterns[0].text == "plant/+/supply_temp"
    assert wire.parse_client_message('{"type":"ping","id":"x"}') == wire.Ping("x")
    custom = wire.parse_client_message(b'{"type":"note","text":"hi"}', frozenset({"note"}))
    assert custom == wire.Custom("note", {"type": "note", "text": "hi"})


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200), st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
).map(lambda v: json.dumps({"type": "subscribe", "points": v}))))
def test_parser_never_raises_anything_but_wire_error(payload):
    try:
        wire.parse_client_message(payload)
    except wire.WireError:
        pass
