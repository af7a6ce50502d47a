"""hvac_push.transport.wire's client message parser, as property tests: structured near-misses, mutations,
extremes.

The property: every input either becomes a command the server can answer (its
reply encodes) or raises L{wire.WireError}; nothing else ever escapes.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from hvac_push.transport import wire

LEVEL = st.sampled_from(["plant", "ahu-1", "chiller_2", "+", "#", "", "a" * 70, "é", "a b", "..", "-x"])
PATTERN_TEXT = st.lists(LEVEL, min_size=0, max_size=5).map("/".join)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=2**53 - 2, max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just(-0.0),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=40), st.text(max_size=5000))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)
TYPES = st.sampled_from(["subscribe", "unsubscribe", "ping", "auth", "resume", "history", "ack", "Ping", "", "x" * 100])


@st.composite
def near_messages(draw):
    """Objects shaped like real messages, with each field drawn from good and bad values."""
    message: dict = {"type": draw(TYPES)}
    if draw(st.booleans()):
        message["points"] = draw(st.one_of(
            st.lists(PATTERN_TEXT, max_size=5), st.lists(PATTERN_TEXT, min_size=99, max_size=102), JSON_VALUES))
    for key in ("id", "token", "since", "epoch", "point", "alarm", "deadband", "min_interval_ms", "max_interval_ms",
                "alarm_seq"):
        if draw(st.integers(0, 3)) == 0:
            message[key] = draw(JSON_VALUES)
    return message


def check(payload: bytes | str) -> None:
    try:
        command = wire.parse_client_message(payload)
    except wire.WireError as e:
        assert e.code in {"bad_json", "bad_message", "bad_pattern", "unknown_type", "unknown_field"}
        assert isinstance(e.detail, str) and len(e.detail) < 1000
        wire.encode_error(e.code, e.detail)  # the error itself always encodes
        return
    if isinstance(command, wire.Ping):
        assert json.loads(wire.encode_pong(command.id))["id"] == command.id
    elif isinstance(command, (wire.Subscribe, wire.Unsubscribe)):
        assert 0 < len(command.patterns) <= wire.MAX_PATTERNS_PER_MESSAGE
    elif isinstance(command, wire.Auth):
        assert command.token and "token=" not in repr(command)


@settings(max_examples=600)
@given(near_messages())
def test_structured_near_misses(message):
    check(json.dumps(message).encode())


@settings(max_examples=300)
@given(near_messages(), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6))
def test_byte_mutations_of_messages(message, flips):
    data = bytearray(json.dumps(message).encode())
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    check(bytes(data))


@given(st.integers(1, 50_000), st.sampled_from(["[", "{\"a\":", "[{\"b\":["]))
def test_deep_nesting(depth, opener):
    closer = {"[": "]", "{\"a\":": "}", "[{\"b\":[": "]}]"}[opener]
    check(f'{{"type":"ping","id":{opener * depth}1{closer * depth}}}')


@given(st.sampled_from(["1e400", "-1e400", "1e-400", "1" + "0" * 4000, "1" + "0" * 5000, "0.1e999999",
                        "123456789012345678901234567890", "-0", "1E+308", "2e308"]))
def test_extreme_numbers(number):
    check(f'{{"type":"ping","id":{number}}}')
    check(f'{{"type":"history","point":"a/b/c","since":{number}}}')
    check(f'{{"type":"subscribe","points":["#"],"deadband":{number}}}')


@given(st.text(max_size=200))
def test_any_text_in_a_token(token):
    check(json.dumps({"type": "auth", "token": token}))
