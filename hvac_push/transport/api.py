"""C{/api}: history and the alarm journal over plain HTTP, read from the store (docs/api.md).

Every query runs on the store's reader threads; the reactor only parses,
checks the token and writes. Bad parameters get 400 with the reason; a
token reads only what it may read on the WebSocket (L{Permissions.covers}).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import datetime
from typing import Any, Sequence
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from hvac_push.core.points import InvalidPoint, Pattern
from hvac_push.store.interface import AGGREGATES, JournalEntry, Store, StoreError
from hvac_push.store.query import QueryError, choose_step, series
from hvac_push.store.recorder import StoreService
from hvac_push.transport.auth import ALL, AuthError, Authenticator, Permissions
from hvac_push.transport.wire import MAX_PATTERNS_PER_MESSAGE, parse_query

#: Longest range one request may ask for (ten years).
MAX_RANGE = 10 * 366 * 86400.0
#: Journal entries per answer, at most.
MAX_JOURNAL = 100_000
_RELATIVE = re.compile(r"^now(?:-(\d+(?:\.\d+)?)([smhdw]))?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class BadRequest(ValueError):
    """A parameter that cannot be used; the message is the reason sent back with 400."""


class HttpError(Exception):
    def __init__(self, code: int, reason: str, headers: Sequence[tuple[bytes, bytes]] = ()):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.headers = headers


# -- parameters ---------------------------------------------------------------


def request_permissions(authenticator: Authenticator, request: Request, raw_query: str = "") -> Permissions:
    """The grant of the bearer token an HTTP request carries (as the WebSocket handshake takes it), or raise L{AuthError}."""
    headers = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        headers[name.decode("latin-1").lower()] = values[0].decode("latin-1")
    return authenticator.authenticate(headers, (), raw_query)


def challenge(error: AuthError) -> bytes:
    """The C{WWW-Authenticate} value of a 401 (RFC 6750)."""
    return b'Bearer realm="hvac-push"' + (b', error="invalid_token"' if error.token_presented else b"")


def parse_time(name: str, text: str, now: float) -> float:
    """Epoch seconds, ISO 8601 with a zone (C{2026-11-30T10:00:00Z}), C{now} or C{now-24h}."""
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = relative.groups()
        return now - (float(amount) * _UNIT_SECONDS[unit] if amount else 0.0)
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise BadRequest(f"'{name}': expected epoch seconds, ISO 8601 (2026-11-30T10:00:00Z) or now-24h") from None
        if moment.tzinfo is None:
            raise BadRequest(f"'{name}': an ISO 8601 time needs a zone, e.g. Z or +01:00") from None
        value = moment.timestamp()
    if not math.isfinite(value) or not 0 <= value < 1e11:
        raise BadRequest(f"'{name}': out of range")
    return value


def parse_step(text: str) -> float:
    """Seconds, plain or with a unit: C{60}, C{90s}, C{5m}, C{1h}, C{1d}."""
    match = _DURATION.match(text)
    if not match:
        raise BadRequest("'step': expected seconds, or a number with s, m, h, d or w (e.g. 5m)")
    step = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0.001 <= step <= 366 * 86400:
        raise BadRequest("'step': must be between 1 ms and a year")
    return step


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"'{name}' given more than once")
    return values[0]


def parse_range(query: dict[str, list[str]], now: float, default_span: float) -> tuple[float, float]:
    return range_of(_one(query, "from"), _one(query, "to"), now, default_span)


def range_of(start_text: str | None, end_text: str | None, now: float, default_span: float) -> tuple[float, float]:
    """C{from}/C{to} as given (L{parse_time}); C{to} defaults to now, C{from} to C{default_span} before C{to}."""
    end = now if end_text is None else parse_time("to", end_text, now)
    start = end - default_span if start_text is None else parse_time("from", start_text, now)
    if start >= end:
        raise BadRequest("'from' must be before 'to'")
    if end - start > MAX_RANGE:
        raise BadRequest("the range is longer than ten years")
    return start, end


def parse_format(query: dict[str, list[str]]) -> str:
    fmt = _one(query, "format") or "json"
    if fmt not in ("json", "csv"):
        raise BadRequest("'format': expected json or csv")
    return fmt


def parse_points(query: dict[str, list[str]]) -> tuple[Pattern, ...]:
    text = _one(query, "points")
    if not text:
        raise BadRequest("'points' is required: point ids or patterns, comma-separated")
    items = [p for p in text.split(",") if p]
    if not items or len(items) > MAX_PATTERNS_PER_MESSAGE:
        raise BadRequest(f"'points': 1 to {MAX_PATTERNS_PER_MESSAGE} point ids or patterns")
    try:
        return tuple(dict.fromkeys(Pattern.parse(p) for p in items))
    except InvalidPoint as e:
        raise BadRequest(f"'points': {e}") from None


# -- resources ----------------------------------------------------------------


class _StoreResource(Resource):
    """Shared request handling: the raw query, the token, errors as short plain answers."""

    isLeaf = True
    log = Logger()

    def __init__(self, store: StoreService, authenticator: Authenticator | None, clock: IReactorTime):
        super().__init__()
        self.store = store
        self.authenticator = authenticator
        self.clock = clock

    def render_GET(self, request: Request) -> Any:
        ensureDeferred(self._answer(request))
        return NOT_DONE_YET

    async def _answer(self, request: Request) -> None:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        try:
            try:
                raw = request.uri.partition(b"?")[2].decode("utf-8")
                unquote_to_bytes(raw).decode("utf-8")  # percent-escapes too: parse_query would replace bad bytes
            except UnicodeDecodeError:
                raise HttpError(400, "the query is not UTF-8") from None
            query = parse_query(raw)
            permissions = self._permissions(request, raw)
            await self.serve(request, query, permissions, gone)
        except BadRequest as e:
            self._fail(request, 400, str(e), ())
        except QueryError as e:
            self._fail(request, 400, str(e), ())
        except HttpError as e:
            self._fail(request, e.code, e.reason, e.headers)
        except StoreError as e:
            self.log.warn("api: store unavailable: {error}", error=str(e))
            self._fail(request, 503, "the store is unavailable; try again later", ())
        except Exception:
            self.log.failure("api: {uri} failed", uri=request.path)
            self._fail(request, 500, "internal error", ())
        else:
            if not gone:
                request.finish()

    def _permissions(self, request: Request, raw_query: str) -> Permissions:
        if self.authenticator is None:
            return ALL
        try:
            return request_permissions(self.authenticator, request, raw_query)
        except AuthError as e:
            raise HttpError(401, e.reason, ((b"www-authenticate", challenge(e)),)) from None

    def _fail(self, request: Request, code: int, reason: str, headers: Sequence[tuple[bytes, bytes]]) -> None:
        if request.finished or request.startedWriting or getattr(request, "_disconnected", False):
            if not request.finished and not getattr(request, "_disconnected", False):
                request.finish()  # mid-stream: the truncated answer is all we can do
            return
        request.setResponseCode(code)
        for name, value in headers:
            request.setHeader(name, value)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.write(_dumps({"error": reason}).encode("utf-8") + b"\n")
        request.finish()

    async def serve(self, request: Request, query: dict[str, list[str]], permissions: Permissions,
                    gone: list[bool]) -> None:
        raise NotImplementedError


def resolve_points(store: Store, patterns: tuple[Pattern, ...]) -> list[str]:
    """The stored point ids the patterns match; exact ids are kept even when nothing is stored yet."""
    exact = [p.text for p in patterns if "+" not in p.levels and "#" not in p.levels]
    wild = [p for p in patterns if p.text not in exact]
    found = list(exact)
    if wild:
        found += [i for i in store.point_ids() if i not in exact and any(p.matches(i) for p in wild)]
    return found


def _csv_line(*fields: object) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if f is None else _csv_value(f) for f in fields])
    return buffer.getvalue()


def _csv_value(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


class HistoryResource(_StoreResource):
    """C{GET /api/history?points=P1,P2&from=TS&to=TS&step=S&agg=mean&format=json|csv}."""

    async def serve(self, request: Request, query: dict[str, list[str]], permissions: Permissions,
                    gone: list[bool]) -> None:
        unknown = set(query) - {"points", "from", "to", "step", "agg", "format", "token"}
        if unknown:
            raise BadRequest(f"unknown parameter {sorted(unknown)[0]!r}")
        patterns = parse_points(query)
        forbidden = [p.text for p in patterns if not permissions.covers(p)]
        if forbidden:
            raise HttpError(403, "not allowed to read " + ", ".join(forbidden))
        start, end = parse_range(query, self.clock.seconds(), 3600.0)
        step_text = _one(query, "step")
        step = choose_step(start, end, None if step_text is None else parse_step(step_text))
        agg = _one(query, "agg") or "mean"
        if agg not in AGGREGATES:
            raise BadRequest(f"'agg': expected one of {', '.join(AGGREGATES)}")
        fmt = parse_format(query)
        point_ids = await self.store.read(resolve_points, patterns)
        request.setHeader(b"cache-control", b"no-store")
        if fmt == "json":
            result: dict[str, Any] = {}
            for point_id in point_ids:
                rows = await self.store.read(series, point_id, start, end, step, agg)
                result[point_id] = [row for row in rows if finite(row[1])]
            request.setHeader(b"content-type", b"application/json")
            request.write(_dumps({"from": start, "to": end, "step": step, "agg": agg if step else None,
                                  "points": result}).encode("utf-8"))
            return
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"content-disposition", b'attachment; filename="history.csv"')
        request.write(b"ts,point,value\n")
        for point_id in point_ids:  # one point at a time: memory stays bounded by one series
            rows = await self.store.read(series, point_id, start, end, step, agg)
            for chunk in range(0, len(rows), 5000):
                if gone:
                    return
                request.write("".join(
                    _csv_line(ts, point_id, value) for ts, value in rows[chunk:chunk + 5000] if finite(value)
                ).encode("utf-8"))


def finite(value: object) -> bool:
    return not (isinstance(value, float) and not math.isfinite(value))


def _journal_dict(entry: JournalEntry) -> dict[str, Any]:
    return {
        "ts": entry.ts, "seq": entry.seq, "alarm": entry.alarm, "point": entry.point, "kind": entry.kind,
        "state": entry.state, "severity": entry.severity, "value": entry.value, "limit": entry.limit,
        "message": entry.message, "by": entry.by, "comment": entry.comment, "shelved_until": entry.shelved_until,
    }


_JOURNAL_FIELDS = (
    "ts", "seq", "alarm", "point", "kind", "state", "severity", "value", "limit", "message", "by", "comment",
    "shelved_until",
)


class JournalResource(_StoreResource):
    """C{GET /api/alarms/journal?from=TS&to=TS&format=json|csv}: every alarm transition, in order."""

    async def serve(self, request: Request, query: dict[str, list[str]], permissions: Permissions,
                    gone: list[bool]) -> None:
        unknown = set(query) - {"from", "to", "format", "token"}
        if unknown:
            raise BadRequest(f"unknown parameter {sorted(unknown)[0]!r}")
        start, end = parse_range(query, self.clock.seconds(), 86400.0)
        fmt = parse_format(query)
        entries = await self.store.read(lambda store: store.journal(start, end, MAX_JOURNAL))
        visible = [e for e in entries if permissions.allows(e.point)]
        request.setHeader(b"cache-control", b"no-store")
        if fmt == "json":
            request.setHeader(b"content-type", b"application/json")
            request.write(_dumps({"from": start, "to": end, "journal": [_journal_dict(e) for e in visible]}).encode("utf-8"))
            return
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"content-disposition", b'attachment; filename="alarm-journal.csv"')
        request.write((",".join(_JOURNAL_FIELDS) + "\n").encode("utf-8"))
        for chunk in range(0, len(visible), 5000):
            if gone:
                return
            request.write("".join(
                _csv_line(*(_journal_dict(e)[f] for f in _JOURNAL_FIELDS)) for e in visible[chunk:chunk + 5000]
            ).encode("utf-8"))


def make_api(store: StoreService, authenticator: Authenticator | None, clock: IReactorTime) -> Resource:
    """The C{/api} tree: C{/api/history} and C{/api/alarms/journal}."""
    api = Resource()
    api.putChild(b"history", HistoryResource(store, authenticator, clock))
    alarms = Resource()
    alarms.putChild(b"journal", JournalResource(store, authenticator, clock))
    api.putChild(b"alarms", alarms)
    return api


__all__ = [
    "BadRequest", "HistoryResource", "JournalResource", "finite", "make_api", "parse_step", "parse_time", "range_of",
    "resolve_points",
]
