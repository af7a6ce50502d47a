"""The WebSocket C{history} request with C{points}: the store's answer, as GET /api/history gives it, over a real socket."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from hvac_push.core.points import AlarmLimits, PointMeta, Sample
from hvac_push.testing import PushClient, connect
from hvac_push.transport import wire
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, sleep, within
from tests.test_store_journal import GatedStore
from tests.test_store_api import OPERATOR, VIEWER, P, Q, authenticator, fill, get, serve


def reactor() -> Any:
    from twisted.internet import reactor as running

    return running


async def client(port: int, token: str | None = None) -> PushClient:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    opened = await within(10, connect(reactor(), port, headers=headers))
    await within(10, opened.next("snapshot"))
    return opened


async def closed(opened: PushClient) -> None:
    opened.sendClose()
    await within(5, opened.closed)


async def answer(opened: PushClient, request: dict[str, Any]) -> dict[str, Any]:
    """Send C{request}; the next C{history} or C{error} message."""
    opened.send_json(request)

    async def loop() -> dict[str, Any]:
        while True:
            message = await opened.next()
            if message["type"] in ("history", "error"):
                return message

    return await within(10, loop())


# -- the message ---------------------------------------------------------------------------


def test_the_points_form_is_parsed_with_its_range_as_written():
    query = wire.parse_client_message(json.dumps(
        {"type": "history", "points": [P, "plant/+/supply_temp"], "from": "now-24h", "to": 1764496800.5,
         "step": "15m", "agg": "max", "id": 3}
    ))
    assert query == wire.HistoryQuery(
        (wire.Pattern.parse(P), wire.Pattern.parse("plant/+/supply_temp")), "now-24h", "1764496800.5", "15m", "max"
    )
    assert wire.parse_client_message('{"type":"history","point":"a/b/c","since":5}') == wire.HistoryRequest("a/b/c", 5)


@pytest.mark.parametrize("message, detail", [
    ({"type": "history", "points": []}, "non-empty list"),
    ({"type": "history", "points": [P], "point": P}, "either 'point'"),
    ({"type": "history", "point": P, "from": 0}, "go with 'points'"),
    ({"type": "history", "points": [P], "from": True}, "'from' must be a number or a short string"),
    ({"type": "history", "points": [P], "agg": 3}, "'agg' must be a string"),
    ({"type": "history", "points": [P], "format": "csv"}, "unknown field 'format'"),
])
def test_a_bad_points_request_is_refused_with_the_reason(message, detail):
    with pytest.raises(wire.WireError) as refused:
        wire.parse_client_message(json.dumps(message))
    assert detail in refused.value.detail


# -- over a socket -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_one_request_reads_several_points_from_the_store_as_http_does(tmp_path):
    server = await serve(tmp_path)
    try:
        first = await fill(server)
        ws = await client(server.port)
        raw = await answer(ws, {"type": "history", "points": [P, Q], "from": first, "to": first + 600})
        _, _, body = await get(server.port, f"/api/history?points={P},{Q}&from={first}&to={first + 600}")
        assert raw == {"type": "history", **json.loads(body)}
        assert raw["step"] is None and len(raw["points"][P]) == 61 and raw["points"][P][0] == [first, 6.0]

        rolled = await answer(ws, {"type": "history", "points": ["plant/+/supply_temp"], "from": str(first),
                                   "to": first + 600, "step": "5m", "agg": "max"})
        _, _, body = await get(server.port, f"/api/history?points=plant/%2B/supply_temp&from={first}&to={first + 600}"
                                            "&step=5m&agg=max")
        assert rolled == {"type": "history", **json.loads(body)}
        assert (rolled["step"], rolled["agg"], set(rolled["points"])) == (300, "max", {P, Q})

        # The old single-point form still answers from the in-memory trend.
        ws.send_json({"type": "history", "point": P, "since": first})
        trend = await within(10, ws.next("history"))
        assert trend["point"] == P and len(trend["samples"]) == 61

        for bad, detail in (
            ({"from": "yesterday"}, "'from': expected epoch seconds"),
            ({"from": first + 10, "to": first}, "'from' must be before 'to'"),
            ({"step": "fast"}, "'step': expected seconds"),
            ({"from": first - 40 * 86400, "to": first, "step": 1}, "larger step"),
            ({"agg": "median"}, "'agg': expected one of"),
        ):
            error = await answer(ws, {"type": "history", "points": [P], **bad})
            assert (error["type"], error["error"]) == ("error", "bad_message") and detail in error["detail"], error
        # The connection and the server go on serving.
        again = await answer(ws, {"type": "history", "points": [P], "from": first, "to": first + 5})
        assert again["points"] == {P: [[first, 6.0]]}
        await closed(ws)
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_a_token_reads_only_its_points_as_over_http(tmp_path):
    server = await serve(tmp_path, authenticator=authenticator(tmp_path))
    try:
        first = await fill(server)
        viewer = await client(server.port, VIEWER)
        for points in ([P, Q], ["plant/+/supply_temp"], ["#"]):
            refused = await answer(viewer, {"type": "history", "points": points, "from": first})
            assert (refused["type"], refused["error"]) == ("error", "forbidden"), points
            code, _, _ = await get(server.port, "/api/history?points=" + ",".join(points).replace("+", "%2B")
                                   .replace("#", "%23"), token=VIEWER)
            assert code == 403
        mine = await answer(viewer, {"type": "history", "points": ["plant/chiller-1/#"], "from": first})
        assert set(mine["points"]) == {P} and len(mine["points"][P]) == 61
        operator = await client(server.port, OPERATOR)
        every = await answer(operator, {"type": "history", "points": ["#"], "from": first})
        assert set(every["points"]) == {P, Q}
        await closed(viewer)
        await closed(operator)
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_without_a_store_the_points_form_is_unavailable_and_the_point_form_still_works():
    server = await start_server()
    try:
        server.hub.publish(Sample(P, 7.0, "degC", reactor().seconds()))
        ws = await client(server.port)
        refused = await answer(ws, {"type": "history", "points": [P]})
        assert (refused["type"], refused["error"]) == ("error", "unavailable")
        trend = await answer(ws, {"type": "history", "point": P, "since": 0})
        assert trend["samples"][-1][1] == 7.0
        await closed(ws)
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_acked_and_shelved_come_only_once_the_journal_has_the_transition(tmp_path):
    store = GatedStore(str(tmp_path / "gated.db"))
    store.gate.set()
    store.open()
    server = await start_server(store=store)
    try:
        first = await fill(server)
        server.hub.configure(P, PointMeta(limits=AlarmLimits(high=1.0)))
        server.hub.publish(Sample(P, 30.0, "degC", first + 700))
        writer = server.service.store.writer
        await eventually(lambda: writer.pending == 0)
        ws = await client(server.port)
        for request, confirmation, state in (
            ({"type": "ack", "alarm": f"{P}:high", "comment": "pump restarted"}, "acked", "acknowledged"),
            ({"type": "shelve", "alarm": f"{P}:high", "minutes": 30}, "shelved", "shelved"),
        ):
            store.gate.clear()  # the database holds every write from now on
            ws.send_json(request)
            transition = await within(10, ws.next("alarm"))  # the alarm changes for everyone at once...
            assert transition["alarm"]["state"] == state
            await sleep(0.3)
            assert ws.messages.pending == []  # ...but the confirmation waits for the commit
            store.gate.set()
            await within(10, ws.next(confirmation))
            # At the moment it arrived, the journal held the transition.
            assert [e.state for e in store.journal(0, 2e9, 100)][-1] == state
        acks = [e for e in store.journal(0, 2e9, 100) if e.state == "acknowledged"]
        assert [(e.by, e.comment) for e in acks] == [("anonymous", "pump restarted")]
        await closed(ws)
    finally:
        store.gate.set()
        await stop_server(server)


class SlowReads(GatedStore):
    """Reads of samples wait at a gate of their own (writes go through)."""

    def __init__(self, path: str):
        super().__init__(path)
        self.gate.set()
        self.read_gate = threading.Event()

    def raw(self, point_id: str, start: float, end: float, limit: int) -> list[tuple[float, Any]]:
        self.read_gate.wait(10)
        return super().raw(point_id, start, end, limit)


@pytest_twisted.ensureDeferred
async def test_a_fifth_history_request_while_four_are_read_is_refused_and_the_four_are_answered(tmp_path):
    store = SlowReads(str(tmp_path / "slow.db"))
    store.open()
    server = await start_server(store=store)
    try:
        first = await fill(server)
        ws = await client(server.port)
        for _ in range(4):
            ws.send_json({"type": "history", "points": [P], "from": first, "to": first + 600})
        busy = await answer(ws, {"type": "history", "points": [P], "from": first, "to": first + 600})
        assert (busy["type"], busy["error"]) == ("error", "busy")
        store.read_gate.set()
        answers = [await within(10, ws.next("history")) for _ in range(4)]
        assert all(len(a["points"][P]) == 61 for a in answers)
        again = await answer(ws, {"type": "history", "points": [P], "from": first, "to": first + 600})
        assert again["type"] == "history"  # the slots are free again
        await closed(ws)
    finally:
        store.read_gate.set()
        await stop_server(server)
