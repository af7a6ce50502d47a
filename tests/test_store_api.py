"""/api/history and /api/alarms/journal over a real loopback socket, against a SQLite store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from hvac_push.core.points import AlarmLimits, PointMeta, Sample
from hvac_push.store.sqlite import SqliteStore
from hvac_push.transport.auth import Authenticator, StaticTokens, hash_token
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, within

P = "plant/chiller-1/supply_temp"
Q = "plant/crac-1/supply_temp"
OPERATOR = "operator-token-0123456789abcdefghijklmnop"
VIEWER = "viewer-token-0123456789abcdefghijklmnopqrst"


async def get(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    from twisted.internet import reactor
    from twisted.web.client import Agent, HTTPConnectionPool, readBody
    from twisted.web.http_headers import Headers

    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    headers = Headers({b"authorization": [f"Bearer {token}".encode()]} if token else {})
    response = await within(10, agent.request(b"GET", f"http://127.0.0.1:{port}{path}".encode(), headers))
    body = await within(10, readBody(response))
    flat = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    return response.code, flat, body


async def serve(tmp_path: Path, **options: Any) -> Any:
    store = SqliteStore(str(tmp_path / "api.db"))
    store.open()
    server = await start_server(store=store, **options)
    return server


async def fill(server: Any) -> float:
    """Ten minutes of two points, one sample every 10 s, ending now; returns the first ts."""
    from twisted.internet import reactor

    now = reactor.seconds()
    first = now - 600
    for i in range(61):
        server.hub.publish_many([Sample(P, 6.0 + (i % 3), "degC", first + 10 * i),
                                 Sample(Q, 18.0 + i / 10, "degC", first + 10 * i)])
    writer = server.service.store.writer
    await eventually(lambda: writer.stats.samples_written >= 122 and writer.pending == 0, timeout=10)
    return first


@pytest_twisted.ensureDeferred
async def test_history_as_json_and_csv_raw_and_rolled_up(tmp_path):
    server = await serve(tmp_path)
    try:
        first = await fill(server)
        code, headers, body = await get(server.port, f"/api/history?points={P},{Q}&from={first}&to={first + 600}")
        assert code == 200 and headers["content-type"] == "application/json"
        document = json.loads(body)
        assert document["step"] is None and set(document["points"]) == {P, Q}
        assert len(document["points"][P]) == 61
        assert document["points"][P][0] == [first, 6.0]

        # A pattern with a literal '+', as a person types it; a step gives rollups.
        code, _, body = await get(server.port, f"/api/history?points=plant/+/supply_temp&from={first}&to={first + 600}"
                                               "&step=5m&agg=max")
        assert code == 200
        rolled = json.loads(body)
        assert rolled["step"] == 300 and rolled["agg"] == "max" and set(rolled["points"]) == {P, Q}
        assert all(value <= 8.0 for _, value in rolled["points"][P]) and max(v for _, v in rolled["points"][P]) == 8.0

        code, headers, body = await get(server.port, f"/api/history?points={P}&from={first}&to={first + 600}&format=csv")
        assert code == 200 and headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(body.decode())))
        assert rows[0] == ["ts", "point", "value"] and len(rows) == 62
        assert rows[1] == [repr(first), P, "6.0"]
    finally:
        await stop_server(server)


BAD = [
    ("/api/history", "'points' is required"),
    ("/api/history?points=nope", "'points': bad pattern"),
    (f"/api/history?points={P}&from=yesterday", "'from': expected epoch seconds"),
    (f"/api/history?points={P}&from=2026-01-01T00:00:00", "needs a zone"),
    (f"/api/history?points={P}&from=now-1h&to=now-2h", "'from' must be before 'to'"),
    (f"/api/history?points={P}&from=1e300", "out of range"),
    (f"/api/history?points={P}&step=fast", "'step': expected seconds"),
    (f"/api/history?points={P}&step=0", "'step': must be between"),
    (f"/api/history?points={P}&from=now-30d&step=1", "larger step"),
    (f"/api/history?points={P}&agg=median", "'agg': expected one of mean, min, max, last"),
    (f"/api/history?points={P}&format=xml", "'format': expected json or csv"),
    (f"/api/history?points={P}&limit=5", "unknown parameter 'limit'"),
    (f"/api/history?points={P}&from=1&from=2", "'from' given more than once"),
    ("/api/history?points=%ff", "not UTF-8"),
    ("/api/alarms/journal?from=soon", "'from': expected epoch seconds"),
    ("/api/alarms/journal?points=x", "unknown parameter 'points'"),
]


@pytest_twisted.ensureDeferred
async def test_bad_parameters_get_400_with_the_reason(tmp_path):
    server = await serve(tmp_path)
    try:
        for path, reason in BAD:
            code, headers, body = await get(server.port, path)
            assert code == 400, path
            assert headers["content-type"] == "application/json"
            assert reason in json.loads(body)["error"], (path, body)
        # ...and the server goes on serving.
        assert (await get(server.port, f"/api/history?points={P}"))[0] == 200
    finally:
        await stop_server(server)


def authenticator(tmp_path: Path) -> Authenticator:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[token]]\nname = "operator"\nsha256 = "{hash_token(OPERATOR)}"\npoints = ["#"]\nack = true\n'
        f'[[token]]\nname = "viewer"\nsha256 = "{hash_token(VIEWER)}"\npoints = ["plant/chiller-1/#"]\n'
    )
    return Authenticator([StaticTokens.load(str(tokens))])


@pytest_twisted.ensureDeferred
async def test_with_authentication_a_token_reads_only_what_it_may_read(tmp_path):
    server = await serve(tmp_path, authenticator=authenticator(tmp_path))
    try:
        first = await fill(server)
        engine = server.service.alarms
        for point_id in (P, Q):
            server.hub.configure(point_id, PointMeta(limits=AlarmLimits(high=1.0)))
            server.hub.publish(Sample(point_id, 30.0, "degC", first + 700))
        engine.ack(f"{P}:high", by="operator", comment="pump restarted")
        writer = server.service.store.writer
        await eventually(lambda: writer.stats.journal_written >= 3 and writer.stats.samples_written >= 124
                         and writer.pending == 0, timeout=10)

        code, headers, body = await get(server.port, f"/api/history?points={P}")
        assert code == 401 and headers["www-authenticate"] == 'Bearer realm="hvac-push"'
        code, headers, _ = await get(server.port, f"/api/history?points={P}", token="wrong")
        assert code == 401 and 'error="invalid_token"' in headers["www-authenticate"]
        code, _, body = await get(server.port, f"/api/history?points={P},{Q}", token=VIEWER)
        assert code == 403 and json.loads(body)["error"] == f"not allowed to read {Q}"
        code, _, body = await get(server.port, "/api/history?points=plant/%2B/supply_temp", token=VIEWER)
        assert code == 403
        code, _, body = await get(server.port, f"/api/history?points={P}&from={first}&to={first + 1000}", token=VIEWER)
        assert code == 200 and len(json.loads(body)["points"][P]) == 62

        code, _, body = await get(server.port, f"/api/alarms/journal?from={first}&to={first + 1000}", token=OPERATOR)
        journal = json.loads(body)["journal"]
        assert [(e["alarm"], e["state"], e["by"], e["comment"]) for e in journal] == [
            (f"{P}:high", "active", None, None),
            (f"{Q}:high", "active", None, None),
            (f"{P}:high", "acknowledged", "operator", "pump restarted"),
        ]
        code, _, body = await get(server.port, f"/api/alarms/journal?from={first}&to={first + 1000}", token=VIEWER)
        assert {e["point"] for e in json.loads(body)["journal"]} == {P}
        code, headers, body = await get(server.port, f"/api/alarms/journal?from={first}&to={first + 1000}&format=csv", token=VIEWER)
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert headers["content-type"].startswith("text/csv")
        assert [(r["state"], r["by"], r["comment"]) for r in rows] == [
            ("active", "", ""), ("acknowledged", "operator", "pump restarted")
        ]
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_without_a_store_there_is_no_api(tmp_path):
    server = await start_server()
    try:
        assert (await get(server.port, f"/api/history?points={P}"))[0] == 404
    finally:
        await stop_server(server)
