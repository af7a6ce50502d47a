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


@pytest.mark.parametrize(
    "message, field",
    [
        ({"type": "subscribe", "points": ["#"], "deadband_percent": 5}, "deadband_percent"),
        ({"type": "unsubscribe", "points": ["#"], "deadband": 1}, "deadband"),
        ({"type": "ping", "id": 1, "ids": 2}, "ids"),
        ({"type": "resume", "since": 1, "epoch": "e", "alarmseq": 1}, "alarmseq"),
        ({"type": "history", "point": "a/b/c", "since": 0, "until": 5}, "until"),
        ({"type": "ack", "alarm": "a/b/c:high", "note": "x"}, "note"),
        ({"type": "auth", "token": "t", "refresh": True}, "refresh"),
        ({"type": "ping", "x" * 500: 1}, "x" * 40),
    ],
)
def test_unknown_fields_are_errors_that_name_the_field(message, field):
    with pytest.raises(wire.WireError) as e:
        wire.parse_client_message(json.dumps(message))
    assert e.value.code == "unknown_field"
    assert repr(field) in e.value.detail and len(e.value.detail) < 200


def test_id_is_allowed_in_every_message_and_custom_types_are_not_checked():
    for message in (
        {"type": "subscribe", "points": ["#"], "deadband": 0.5, "min_interval_ms": 10, "max_interval_ms": 100},
        {"type": "unsubscribe", "points": ["#"]},
        {"type": "ping"},
        {"type": "resume", "since": 1, "epoch": "e", "alarm_seq": 3},
        {"type": "history", "point": "a/b/c", "since": 0},
        {"type": "ack", "alarm": "a/b/c:high"},
        {"type": "auth", "token": "t"},
    ):
        wire.parse_client_message(json.dumps({**message, "id": 7}))
        wire.parse_client_message(json.dumps(message))
    custom = wire.parse_client_message(b'{"type":"note","anything":1}', frozenset({"note"}))
    assert custom == wire.Custom("note", {"type": "note", "anything": 1})


@pytest.mark.parametrize("text", ["\u00b2", "\u00b3", "\u0661", "1\u0662", "\uff11", "-1", "1.0", "", " 1", "1" * 17])
def test_only_ascii_digits_are_numbers_in_the_handshake_query(text):
    for key in ("since", "alarm_seq"):
        query = {"since": ["1"], "epoch": ["e"], key: [text]}
        with pytest.raises(wire.WireError) as e:
            wire.query_resume(query)
        assert e.value.code == "bad_message"
    assert wire.query_resume({"since": ["12"], "epoch": ["e"], "alarm_seq": ["0"]}) == wire.Resume(12, "e", 0)


def test_a_point_without_a_value_encodes_as_null():
    point = Point("p/u/a", None, "°C", 5.0, "down", 3)
    assert json.loads(wire.encode_snapshot("E", 3, [point]))["points"]["p/u/a"] == {
        "value": None, "unit": "°C", "ts": 5.0, "version": 3, "status": "down"
    }
    assert wire.encode_point(point)["value"] is None


@pytest.mark.parametrize("request_id", ["r-1", 7, -2.5, 0, "", "x" * wire.MAX_REQUEST_ID_LENGTH])
def test_any_message_may_carry_an_id_and_its_answer_echoes_it(request_id):
    request = wire.parse_request(json.dumps({"type": "history", "point": "p/u/a", "since": 1, "id": request_id}))
    assert request.id == request_id and request.command == wire.HistoryRequest("p/u/a", 1)
    answer = wire.with_request_id(wire.encode_acked("p/u/a:high"), request.id)
    assert json.loads(answer) == {"id": request_id, "type": "acked", "alarm": "p/u/a:high"}
    assert wire.parse_request(b'{"type":"ping"}').id is None
    assert wire.with_request_id(b'{"type":"acked"}', None) == b'{"type":"acked"}'
    assert json.loads(wire.with_request_id(b"{ }", request_id)) == {"id": request_id}


@pytest.mark.parametrize("request_id", [True, None, {"a": 1}, [1], "x" * (wire.MAX_REQUEST_ID_LENGTH + 1), 2**53 + 1])
def test_an_id_that_cannot_be_echoed_is_a_bad_message_without_an_id(request_id):
    if request_id is None:  # an explicit null is the same as no id
        assert wire.parse_request(b'{"type":"ping","id":null}').id is None
        return
    with pytest.raises(wire.WireError) as raised:
        wire.parse_request(json.dumps({"type": "ack", "alarm": "a", "id": request_id}))
    assert raised.value.code == "bad_message" and raised.value.request_id is None


@pytest.mark.parametrize(
    "message, code",
    [
        ({"type": "subscribe", "points": ["a/#/c"], "id": "q"}, "bad_pattern"),
        ({"type": "subscribe", "points": ["a/b/c"], "deadbnd": 1, "id": "q"}, "unknown_field"),
        ({"type": "launch", "id": "q"}, "unknown_type"),
        ({"id": "q"}, "bad_message"),
    ],
)
def test_a_refused_message_keeps_its_id_for_the_error(message, code):
    with pytest.raises(wire.WireError) as raised:
        wire.parse_request(json.dumps(message))
    assert (raised.value.code, raised.value.request_id) == (code, "q")


def test_a_large_snapshot_gets_its_id_without_being_decoded_wrongly():
    points = [Point(f"p/u/p{i}", float(i), "°C", 1.0, "ok", i + 1) for i in range(500)]
    answer = json.loads(wire.with_request_id(wire.encode_snapshot("E", 500, points), "s"))
    assert answer["id"] == "s" and answer["type"] == "snapshot" and len(answer["points"]) == 500
