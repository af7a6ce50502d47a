"""WebSocket requests the store answers: ranged C{history}, and confirmations that wait for the journal.

A C{history} request with C{points} is read exactly as C{GET /api/history}
reads it (L{hvac_push.transport.api}): the same parameters, the same token
rule (every pattern must be within the grant), the same answer document, and
the queries run on the store's reader threads, never on the reactor's.

An operator's confirmation (C{acked}, C{shelved}, C{out_of_service}) is sent
only once the transition it confirms is committed to the alarm journal, so a
crash right after the client saw it loses nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from hvac_push.store.interface import AGGREGATES, StoreError
from hvac_push.store.query import QueryError, choose_step, series
from hvac_push.store.recorder import StoreService
from hvac_push.transport import wire
from hvac_push.transport.api import BadRequest, finite, parse_step, range_of, resolve_points
from hvac_push.transport.auth import Permissions

#: Ranged history requests one connection may have running at once.
MAX_IN_FLIGHT = 4
#: Without C{from}, a request covers this long before C{to} (as the HTTP endpoint does).
DEFAULT_SPAN = 3600.0

_log = Logger()


class Asker(Protocol):
    """What this module needs of a connection (L{hvac_push.transport.protocol.PushServerProtocol})."""

    permissions: Permissions
    request_id: wire.RequestId | None

    def send_bytes(self, payload: bytes) -> None: ...


def _answer(client: Asker, request_id: wire.RequestId | None, payload: bytes) -> None:
    """A late answer: it echoes the C{id} of the request it answers, captured when that request arrived."""
    client.send_bytes(wire.with_request_id(payload, request_id))


def _error(client: Asker, request_id: wire.RequestId | None, code: str, detail: str) -> None:
    _answer(client, request_id, wire.encode_error(code, detail))


def answer_after_journal(client: Asker, store: StoreService | None, payload: bytes) -> None:
    """Send C{payload} once every alarm transition so far is committed (at once on a server without a store)."""
    request_id = client.request_id
    if store is None:
        _answer(client, request_id, payload)
        return

    def failed(failure: Failure | None = None) -> None:
        _error(client, request_id, "store_unavailable", "done, but not recorded in the alarm journal: the store stopped")

    if not store.running:  # shutting down: the writer takes nothing more
        failed()
        return

    store.journal_written().addCallbacks(lambda _: _answer(client, request_id, payload), failed)


class HistoryQueries:
    """One connection's ranged C{history} requests: checked on arrival, answered when the store has read them."""

    def __init__(self, client: Asker):
        self.client = client
        self.in_flight = 0

    def start(self, store: StoreService | None, request: wire.HistoryQuery, now: float) -> None:
        """Check C{request} (a L{wire.WireError} for what is wrong) and start reading it from C{store}."""
        if store is None:
            raise wire.WireError("unavailable", "history ranges need a store (--store); this server keeps none")
        forbidden = [p.text for p in request.patterns if not self.client.permissions.covers(p)]
        if forbidden:
            raise wire.WireError("forbidden", "not allowed to read " + ", ".join(forbidden))
        try:
            start, end = range_of(request.start, request.end, now, DEFAULT_SPAN)
            step = choose_step(start, end, None if request.step is None else parse_step(request.step))
        except (BadRequest, QueryError) as e:
            raise wire.WireError("bad_message", str(e)) from None
        agg = request.agg or "mean"
        if agg not in AGGREGATES:
            raise wire.WireError("bad_message", f"'agg': expected one of {', '.join(AGGREGATES)}")
        if self.in_flight >= MAX_IN_FLIGHT:
            raise wire.WireError("busy", f"at most {MAX_IN_FLIGHT} history requests at once; wait for an answer")
        self.in_flight += 1
        ensureDeferred(self._read(store, request, start, end, step, agg, self.client.request_id))

    async def _read(
        self,
        store: StoreService,
        request: wire.HistoryQuery,
        start: float,
        end: float,
        step: float | None,
        agg: str,
        request_id: wire.RequestId | None,
    ) -> None:
        try:
            point_ids: list[str] = await store.read(resolve_points, request.patterns)
            points: dict[str, list[list[Any]]] = {}
            for point_id in point_ids:  # one query per point, as the HTTP endpoint does
                rows = await store.read(series, point_id, start, end, step, agg)
                points[point_id] = [row for row in rows if finite(row[1])]
        except StoreError as e:
            _log.warn("history request: store unavailable: {error}", error=str(e))
            _error(self.client, request_id, "store_unavailable", "the store is unavailable; try again later")
        except Exception:
            _log.failure("history request failed")
            _error(self.client, request_id, "internal_error", "the history request failed")
        else:
            range_ = wire.encode_history_range(start, end, step, agg if step else None, points)
            _answer(self.client, request_id, range_)
        finally:
            self.in_flight -= 1


__all__ = ["Asker", "HistoryQueries", "MAX_IN_FLIGHT", "answer_after_journal"]
