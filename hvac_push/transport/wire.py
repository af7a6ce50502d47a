"""The JSON wire protocol, version 1: the only module that builds or parses protocol JSON.

Server messages are built from cached per-point JSON fragments, so an update
frame costs one string join however many clients receive it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Union
from urllib.parse import unquote

from hvac_push.core.points import CovRule, InvalidPoint, Pattern, Point, check_point_id

PROTOCOL_VERSION = 1
SUBPROTOCOL = "hvac-push.v1"
MAX_PATTERNS_PER_MESSAGE = 100
#: The longest string C{id} a client message may carry (echoed on its answer).
MAX_REQUEST_ID_LENGTH = 128
MAX_PING_ID_LENGTH = MAX_REQUEST_ID_LENGTH
MAX_TOKEN_LENGTH = 8192
MAX_ACK_COMMENT = 1000

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


#: A client message's C{id}: a JSON string or number, echoed on the direct answer.
RequestId = Union[str, int, float]


class WireError(Exception):
    """A client message that cannot be obeyed; becomes an C{error} message.

    C{request_id} is the message's C{id} when it was read before the error,
    so the C{error} can echo it.
    """

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.request_id: RequestId | None = None


# -- server to client -------------------------------------------------------

_fragments: dict[tuple[Point, type], str] = {}
#: The newest fragment per point id, found by identity: a plant-sized snapshot
#: reuses every fragment even after C{_fragments} was cleared for its size.
_latest: dict[str, tuple[Point, str]] = {}


def point_fragment(point: Point) -> str:
    """The C{"id":{...}} member for one point, memoised by the (immutable) point itself.

    Keyed by the whole value, not by (id, version): two hubs in one process
    can hold different points under the same id and version. The value's
    type is part of the key because C{1 == True} in Python.
    """
    latest = _latest.get(point.point_id)
    if latest is not None and latest[0] is point:
        return latest[1]
    key = (point, type(point.value))
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
    if len(_latest) > 1_000_000:
        _latest.clear()
    _latest[point.point_id] = (point, fragment)
    return fragment


def _points_message(kind: str, epoch: str, version: int, points: Iterable[Point], extra: str) -> bytes:
    members = ",".join(point_fragment(p) for p in points)
    return (
        f'{{"type":"{kind}","epoch":"{epoch}","version":{version}{extra},"points":{{{members}}}}}'
    ).encode("utf-8")


def encode_snapshot(
    epoch: str,
    version: int,
    points: Iterable[Point],
    *,
    resync: bool = False,
    alarms: Iterable[Any] | None = None,
    alarm_seq: int | None = None,
) -> bytes:
    """C{snapshot}: the full current state of a subscription (sent first, and after subscribe).

    The first snapshot also lists the listed alarms and the alarm C{seq} it is
    current up to; C{resync} says the client's resume point was not usable.
    """
    extra = ',"resync":true' if resync else ""
    if alarms is not None:
        extra += f',"alarm_seq":{alarm_seq or 0},"alarms":{_dumps([alarm_dict(a) for a in alarms])}'
    return _points_message("snapshot", epoch, version, points, extra)


def alarm_dict(alarm: Any) -> dict[str, Any]:
    """An alarm as it appears on the wire (see L{hvac_push.analytics.alarms.Alarm})."""
    return {
        "id": alarm.id,
        "point": alarm.point,
        "kind": alarm.kind,
        "state": alarm.state,
        "severity": alarm.severity,
        "value": alarm.value,
        "limit": alarm.limit,
        "ts": alarm.ts,
        "message": alarm.message,
        **({"by": alarm.by, "comment": alarm.comment} if getattr(alarm, "by", None) else {}),
        **_alarm_management(alarm),
    }


def _alarm_management(alarm: Any) -> dict[str, Any]:
    """The ISA-18.2 members (docs/alarms.md): always priority and ack_required, the others when they apply."""
    extra: dict[str, Any] = {
        "priority": getattr(alarm, "priority", "medium"),
        "ack_required": getattr(alarm, "ack_required", True),
    }
    if getattr(alarm, "latch", False):
        extra["latch"] = True
    for key in ("group", "notification_class", "shelved_until", "suppressed_by", "since"):
        value = getattr(alarm, key, None)
        if value is not None:
            extra[key] = value
    if getattr(alarm, "points", ()):
        extra["points"] = list(alarm.points)
    return extra


def encode_alarm(seq: int, alarm: Any) -> bytes:
    """C{alarm}: one transition, never coalesced."""
    return _dumps({"type": "alarm", "seq": seq, "alarm": alarm_dict(alarm)}).encode("utf-8")


def encode_alarm_list(alarm_seq: int, alarms: Iterable[Any]) -> bytes:
    """C{alarms} with C{resync}: the current list, when a replay cannot reach back far enough."""
    return _dumps(
        {"type": "alarms", "resync": True, "alarm_seq": alarm_seq, "alarms": [alarm_dict(a) for a in alarms]}
    ).encode("utf-8")


def encode_history(point_id: str, samples: Iterable[tuple[float, Any]]) -> bytes:
    return _dumps({"type": "history", "point": point_id, "samples": [list(s) for s in samples]}).encode("utf-8")


def encode_acked(alarm_id: str) -> bytes:
    return _dumps({"type": "acked", "alarm": alarm_id}).encode("utf-8")


def encode_shelved(alarm_id: str, until: float | None) -> bytes:
    """C{shelved}: confirms a C{shelve} (C{until} set) or an C{unshelve} (C{until} null)."""
    return _dumps({"type": "shelved", "alarm": alarm_id, "until": until}).encode("utf-8")


def encode_out_of_service(point_id: str, on: bool) -> bytes:
    """C{out_of_service}: confirms an C{out_of_service} request."""
    return _dumps({"type": "out_of_service", "point": point_id, "on": on}).encode("utf-8")


def encode_update(epoch: str, version: int, points: Iterable[Point]) -> bytes:
    """C{update}: only the points that changed since the client's last version."""
    return _points_message("update", epoch, version, points, "")


def encode_pong(ping_id: object) -> bytes:
    return _dumps({"type": "pong", "id": ping_id}).encode("utf-8")


def encode_error(code: str, detail: str) -> bytes:
    return _dumps({"type": "error", "error": code, "detail": detail}).encode("utf-8")


def with_request_id(payload: bytes, request_id: RequestId | None) -> bytes:
    """A direct answer carrying the C{id} of the request it answers (unchanged without one).

    The one place answers get their C{id}: the member goes first in the
    object, spliced in without decoding a message that may be a large snapshot.
    """
    if request_id is None:
        return payload
    if not payload.startswith(b"{"):
        raise ValueError("an answer must be a JSON object")
    rest = payload[1:].lstrip()
    return b'{"id":' + _dumps(request_id).encode("utf-8") + (b"" if rest.startswith(b"}") else b",") + rest


def encode_authenticated(expires: float | None, points: list[str], ack: bool) -> bytes:
    """C{authenticated}: the answer to an C{auth} message, with the new grant."""
    return _dumps({"type": "authenticated", "expires": expires, "points": points, "ack": ack}).encode("utf-8")


def encode_point(point: Point) -> dict[str, object]:
    """A point as a plain dict, for JSON documents outside the stream (e.g. health)."""
    document: dict[str, dict[str, object]] = json.loads("{" + point_fragment(point) + "}")
    return document[point.point_id]


# -- client to server -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    patterns: tuple[Pattern, ...]
    rule: CovRule | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    since: int
    epoch: str
    alarm_seq: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """The single-point form: the in-memory trend of C{point} since C{since}."""

    point: str
    since: float


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """The store form, as C{GET /api/history} takes it: several points (patterns) over a range.

    C{start}/C{end}/C{step} are kept as the client wrote them (epoch seconds,
    ISO 8601, C{now-24h}; C{60} or C{5m}) and read against the server's clock.
    """

    patterns: tuple[Pattern, ...]
    start: str | None = None
    end: str | None = None
    step: str | None = None
    agg: str | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    alarm: str
    #: Why, in the operator's words; kept in the alarm journal.
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Shelve:
    """Hide an alarm from annunciation for C{minutes} (the server caps it)."""

    alarm: str
    minutes: float
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Unshelve:
    alarm: str
    comment: str = ""


@dataclass(frozen=True, slots=True)
class OutOfService:
    """Take a point's alarms out of service (C{on}) or put them back."""

    point: str
    on: bool
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    patterns: tuple[Pattern, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    id: object


@dataclass(frozen=True, slots=True)
class Auth:
    """A fresh bearer token for this connection (kept out of reprs and logs)."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Custom:
    """A message of a type that a protocol subclass declared it handles."""

    type: str
    message: dict[str, Any]


Command = Union[
    Subscribe, Unsubscribe, Ping, Resume, HistoryRequest, HistoryQuery, Ack, Auth, Shelve, Unshelve, OutOfService
]


@dataclass(frozen=True, slots=True)
class Request:
    """One client message: its command and the C{id} its answer echoes (L{None} without one)."""

    command: Command | Custom
    id: RequestId | None = None

#: The longest shelve a message may ask for (the server's own maximum is usually lower).
MAX_SHELVE_MINUTES = 7 * 24 * 60

#: The fields each client message type may carry; any other is an C{unknown_field}
#: error, so a misspelt option is reported instead of silently ignored. Every
#: message may carry an C{id} (L{parse_request_id}), echoed on its direct answer.
MESSAGE_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset(("type", "id", *names))
    for kind, names in (
        ("subscribe", ("points", "deadband", "min_interval_ms", "max_interval_ms")),
        ("unsubscribe", ("points",)),
        ("ping", ()),
        ("resume", ("since", "epoch", "alarm_seq")),
        ("history", ("point", "since", "points", "from", "to", "step", "agg")),
        ("ack", ("alarm", "comment")),
        ("auth", ("token",)),
        ("shelve", ("alarm", "minutes", "comment")),
        ("unshelve", ("alarm", "comment")),
        ("out_of_service", ("point", "on", "comment")),
    )
}


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


def _number(message: dict[str, Any], key: str, default: float | None, low: float = 0.0) -> float:
    value = message.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < 1e15:
        raise WireError("bad_message", f"'{key}' must be a number >= {low:g}")
    return value


def _optional_int(message: dict[str, Any], key: str) -> int | None:
    if key not in message or message[key] is None:
        return None
    value = message[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**53:
        raise WireError("bad_message", f"'{key}' must be a non-negative integer")
    return value


def parse_cov_rule(message: dict[str, Any]) -> CovRule | None:
    """The optional change-of-value filter of a C{subscribe}."""
    if not any(k in message for k in ("deadband", "min_interval_ms", "max_interval_ms")):
        return None
    deadband = _number(message, "deadband", 0.0)
    min_ms = _optional_int(message, "min_interval_ms") or 0
    max_ms = _optional_int(message, "max_interval_ms")
    if max_ms is not None and max_ms < max(min_ms, 1):
        raise WireError("bad_message", "'max_interval_ms' must be at least 1 and not below 'min_interval_ms'")
    return CovRule(deadband, min_ms / 1000.0, None if max_ms is None else max_ms / 1000.0)


def parse_resume(message: dict[str, Any]) -> Resume:
    """C{resume} (also built from the C{since}/C{epoch}/C{alarm_seq} query of the handshake)."""
    since = _optional_int(message, "since")
    epoch = message.get("epoch")
    if since is None or not isinstance(epoch, str) or len(epoch) > 64:
        raise WireError("bad_message", "resume needs integer 'since' and string 'epoch'")
    return Resume(since, epoch, _optional_int(message, "alarm_seq"))


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    # 1e400 parses as inf, which no reply could echo (encoding refuses it).
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


_loads = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode


def parse_client_message(
    payload: bytes | str, custom_types: frozenset[str] = frozenset()
) -> Command | Custom:
    """Turn one client text frame into a typed command, or raise L{WireError}.

    Types named in C{custom_types} come back as L{Custom} for a subclass to handle.
    """
    return parse_request(payload, custom_types).command


def parse_request_id(message: dict[str, Any]) -> RequestId | None:
    """A message's optional C{id}: a string of at most L{MAX_REQUEST_ID_LENGTH} characters, or a number."""
    request_id = message.get("id")
    if isinstance(request_id, bool) or not (request_id is None or isinstance(request_id, (int, float, str))):
        raise WireError("bad_message", "'id' must be a number or a string")
    if isinstance(request_id, str) and len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise WireError("bad_message", f"'id' longer than {MAX_REQUEST_ID_LENGTH} characters")
    if isinstance(request_id, int) and abs(request_id) > 2**53:
        raise WireError("bad_message", "'id' is outside the exact JSON integer range")
    return request_id


def parse_request(payload: bytes | str, custom_types: frozenset[str] = frozenset()) -> Request:
    """L{parse_client_message} with the message's C{id}; a L{WireError} raised after the C{id} was read carries it."""
    message = _load_object(payload)
    request_id = parse_request_id(message)
    try:
        return Request(_command(message, custom_types), request_id)
    except WireError as e:
        e.request_id = request_id
        raise


def _load_object(payload: bytes | str) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        message = _loads(text)
    except (ValueError, RecursionError) as e:
        # ValueError covers JSONDecodeError, bad UTF-8 and over-long integers.
        raise WireError("bad_json", f"not valid JSON: {str(e)[:100]}") from None
    if not isinstance(message, dict):
        raise WireError("bad_message", "a message must be a JSON object")
    return message


def _command(message: dict[str, Any], custom_types: frozenset[str]) -> Command | Custom:
    kind = message.get("type")
    if not isinstance(kind, str):
        raise WireError("bad_message", "a message needs a string 'type'")
    if kind in custom_types:
        return Custom(kind, message)
    fields = MESSAGE_FIELDS.get(kind)
    if fields is not None:
        for name in message:
            if name not in fields:
                raise WireError("unknown_field", f"unknown field {name[:40]!r} in a {kind} message")
    if kind == "subscribe":
        return Subscribe(parse_patterns(message.get("points")), parse_cov_rule(message))
    if kind == "resume":
        return parse_resume(message)
    if kind == "history" and "points" in message:
        return _parse_history_query(message)
    if kind == "history":
        if any(key in message for key in ("from", "to", "step", "agg")):
            raise WireError("bad_message", "'from', 'to', 'step' and 'agg' go with 'points' (a list), not 'point'")
        point = message.get("point")
        try:
            point_id = check_point_id(point if isinstance(point, str) else "")
        except InvalidPoint as e:
            raise WireError("bad_message", f"'point' must be a point id: {e}") from None
        return HistoryRequest(point_id, _number(message, "since", 0.0))
    if kind == "ack":
        alarm = message.get("alarm")
        if not isinstance(alarm, str) or not 0 < len(alarm) <= 300:
            raise WireError("bad_message", "'alarm' must be an alarm id string")
        comment = message.get("comment", "")
        if not isinstance(comment, str) or len(comment) > MAX_ACK_COMMENT:
            raise WireError("bad_message", f"'comment' must be a string of at most {MAX_ACK_COMMENT} characters")
        return Ack(alarm, comment)
    if kind in ("shelve", "unshelve", "out_of_service"):
        return _parse_alarm_management(kind, message)
    if kind == "unsubscribe":
        return Unsubscribe(parse_patterns(message.get("points")))
    if kind == "ping":
        return Ping(parse_request_id(message))
    if kind == "auth":
        token = message.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
            raise WireError("bad_message", f"'token' must be a string of 1 to {MAX_TOKEN_LENGTH} characters")
        return Auth(token)
    raise WireError("unknown_type", f"unknown message type {kind[:40]!r}")


def _parse_history_query(message: dict[str, Any]) -> HistoryQuery:
    """C{history} with C{points}: the patterns checked here, the range against the clock later."""
    if "point" in message or "since" in message:
        raise WireError("bad_message", "a history request takes either 'point' (and 'since') or 'points'")
    texts: list[str | None] = []
    for key in ("from", "to", "step"):
        value = message.get(key)
        if value is None:
            texts.append(None)
        elif isinstance(value, str) and 0 < len(value) <= 64:
            texts.append(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            texts.append(repr(value))
        else:
            raise WireError("bad_message", f"'{key}' must be a number or a short string")
    agg = message.get("agg")
    if agg is not None and not isinstance(agg, str):
        raise WireError("bad_message", "'agg' must be a string")
    return HistoryQuery(parse_patterns(message.get("points")), texts[0], texts[1], texts[2], agg)


def encode_history_range(
    start: float, end: float, step: float | None, agg: str | None, series: dict[str, list[list[Any]]]
) -> bytes:
    """C{history} answering a C{points} request: the same document as C{GET /api/history}."""
    return _dumps(
        {"type": "history", "from": start, "to": end, "step": step, "agg": agg, "points": series}
    ).encode("utf-8")


#: The members C{shelve}, C{unshelve} and C{out_of_service} cannot do without (the rest: L{MESSAGE_FIELDS}).
_MANAGEMENT_REQUIRED = {"shelve": {"alarm", "minutes"}, "unshelve": {"alarm"}, "out_of_service": {"point", "on"}}


def _parse_alarm_management(kind: str, message: dict[str, Any]) -> Shelve | Unshelve | OutOfService:
    """C{shelve}, C{unshelve} and C{out_of_service}: every member checked (unknown ones already refused)."""
    missing = sorted(_MANAGEMENT_REQUIRED[kind] - set(message))
    if missing:
        raise WireError("bad_message", f"{kind}: '{missing[0]}' is required")
    comment = message.get("comment", "")
    if not isinstance(comment, str) or len(comment) > MAX_ACK_COMMENT:
        raise WireError("bad_message", f"'comment' must be a string of at most {MAX_ACK_COMMENT} characters")
    if kind == "out_of_service":
        point = message["point"]
        try:
            point_id = check_point_id(point if isinstance(point, str) else "")
        except InvalidPoint as e:
            raise WireError("bad_message", f"'point' must be a point id: {e}") from None
        if not isinstance(message["on"], bool):
            raise WireError("bad_message", "'on' must be true or false")
        return OutOfService(point_id, message["on"], comment)
    alarm = message["alarm"]
    if not isinstance(alarm, str) or not 0 < len(alarm) <= 300:
        raise WireError("bad_message", "'alarm' must be an alarm id string")
    if kind == "unshelve":
        return Unshelve(alarm, comment)
    minutes = message["minutes"]
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes <= MAX_SHELVE_MINUTES:
        raise WireError("bad_message", f"'minutes' must be a number above 0 and at most {MAX_SHELVE_MINUTES}")
    return Shelve(alarm, float(minutes), comment)


# -- the handshake query ------------------------------------------------------


def parse_query(query: str) -> dict[str, list[str]]:
    """Name to values, in order, of a raw handshake query string, percent-decoded.

    Parsed here because C{parse_qs} would turn the C{+} wildcard into a space.
    """
    found: dict[str, list[str]] = {}
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            found.setdefault(unquote(name), []).append(unquote(value))
    return found


def query_patterns(query: dict[str, list[str]]) -> tuple[Pattern, ...] | None:
    """The C{points=P1,P2} filter of the handshake, or L{None} when absent."""
    if "points" not in query:
        return None
    return parse_patterns([p for p in query["points"][-1].split(",") if p])


def query_resume(query: dict[str, list[str]]) -> Resume | None:
    """The C{since=V&epoch=E[&alarm_seq=S]} resume point of the handshake, or L{None}."""
    if "since" not in query and "epoch" not in query:
        return None
    message: dict[str, Any] = {"epoch": query["epoch"][-1] if "epoch" in query else None}
    for key in ("since", "alarm_seq"):
        if key in query:
            message[key] = _query_int(query[key][-1], key)
    return parse_resume(message)


def _query_int(text: str, key: str) -> int:
    """A non-negative integer of ASCII digits (C{str.isdigit} also takes C{²} and Arabic-Indic digits)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 16:
        raise WireError("bad_message", f"'{key}' must be a non-negative integer of the digits 0-9")
    return int(text)
