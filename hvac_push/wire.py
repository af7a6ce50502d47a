"""The JSON wire protocol, version 1: the only module that builds or parses protocol JSON.

Server messages are built from cached per-point JSON fragments, so an update
frame costs one string join however many clients receive it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Union

from hvac_push.points import InvalidPoint, Pattern, Point

PROTOCOL_VERSION = 1
SUBPROTOCOL = "hvac-push.v1"
MAX_PATTERNS_PER_MESSAGE = 100
MAX_PING_ID_LENGTH = 128

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class WireError(Exception):
    """A client message that cannot be obeyed; becomes an C{error} message."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


# -- server to client -------------------------------------------------------

_fragments: dict[tuple[str, int], str] = {}


def point_fragment(point: Point) -> str:
    """The C{"id":{...}} member for one point, memoised per (id, version)."""
    key = (point.point_id, point.version)
    fragment = _fragments.get(key)
    if fragment is None:
        if len(_fragments) > 200_000:
            _fragments.clear()
        body = _dumps(
            {
                "value": point.value,
                "unit": point.unit,
                "ts": point.ts,
                "version": point.version,
                "status": point.status,
            }
        )
        fragment = _fragments[key] = f'"{point.point_id}":{body}'
    return fragment


def _points_message(kind: str, epoch: str, version: int, points: Iterable[Point], extra: str) -> bytes:
    members = ",".join(point_fragment(p) for p in points)
    return (
        f'{{"type":"{kind}","epoch":"{epoch}","version":{version}{extra},"points":{{{members}}}}}'
    ).encode("utf-8")


def encode_snapshot(epoch: str, version: int, points: Iterable[Point]) -> bytes:
    """C{snapshot}: the full current state of a subscription (sent first, and after subscribe)."""
    return _points_message("snapshot", epoch, version, points, "")


def encode_update(epoch: str, version: int, points: Iterable[Point]) -> bytes:
    """C{update}: only the points that changed since the client's last version."""
    return _points_message("update", epoch, version, points, "")


def encode_pong(ping_id: object) -> bytes:
    return _dumps({"type": "pong", "id": ping_id}).encode("utf-8")


def encode_error(code: str, detail: str) -> bytes:
    return _dumps({"type": "error", "error": code, "detail": detail}).encode("utf-8")


def encode_point(point: Point) -> dict[str, object]:
    """A point as a plain dict, for JSON documents outside the stream (e.g. health)."""
    return json.loads("{" + point_fragment(point) + "}")[point.point_id]


# -- client to server -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    patterns: tuple[Pattern, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    patterns: tuple[Pattern, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    id: object


@dataclass(frozen=True, slots=True)
class Custom:
    """A message of a type that a protocol subclass declared it handles."""

    type: str
    message: dict[str, Any]


Command = Union[Subscribe, Unsubscribe, Ping]


def parse_patterns(raw: object) -> tuple[Pattern, ...]:
    """Validate a list of pattern strings (from a message or the C{points} query)."""
    if not isinstance(raw, list) or not raw:
        raise WireError("bad_message", "'points' must be a non-empty list of patterns")
    if len(raw) > MAX_PATTERNS_PER_MESSAGE:
        raise WireError(
            "bad_message", f"at most {MAX_PATTERNS_PER_MESSAGE} patterns per message"
        )
    patterns = []
    for item in raw:
        if not isinstance(item, str):
            raise WireError("bad_pattern", "each pattern must be a string")
        try:
            patterns.append(Pattern.parse(item))
        except InvalidPoint as e:
            raise WireError("bad_pattern", str(e)) from None
    return tuple(patterns)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


_loads = json.JSONDecoder(parse_constant=_reject_constant).decode


def parse_client_message(
    payload: bytes | str, custom_types: frozenset[str] = frozenset()
) -> Command | Custom:
    """Turn one client text frame into a typed command, or raise L{WireError}.

    Types named in C{custom_types} come back as L{Custom} for a subclass to handle.
    """
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        message = _loads(text)
    except (ValueError, RecursionError) as e:
        # ValueError covers JSONDecodeError, bad UTF-8 and over-long integers.
        raise WireError("bad_json", f"not valid JSON: {str(e)[:100]}") from None
    if not isinstance(message, dict):
        raise WireError("bad_message", "a message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise WireError("bad_message", "a message needs a string 'type'")
    if kind in custom_types:
        return Custom(kind, message)
    if kind == "subscribe":
        return Subscribe(parse_patterns(message.get("points")))
    if kind == "unsubscribe":
        return Unsubscribe(parse_patterns(message.get("points")))
    if kind == "ping":
        ping_id = message.get("id")
        if isinstance(ping_id, bool) or not (
            ping_id is None or isinstance(ping_id, (int, float, str))
        ):
            raise WireError("bad_message", "'id' must be a number or a string")
        if isinstance(ping_id, str) and len(ping_id) > MAX_PING_ID_LENGTH:
            raise WireError("bad_message", f"'id' longer than {MAX_PING_ID_LENGTH} characters")
        if isinstance(ping_id, int) and abs(ping_id) > 2**53:
            raise WireError("bad_message", "'id' is outside the exact JSON integer range")
        return Ping(ping_id)
    raise WireError("unknown_type", f"unknown message type {kind[:40]!r}")
