"""Nothing forgotten on restart: twistd with a store, killed with SIGKILL and started again on the same data.

The same suite runs against the default SQLite file (chosen by the plant
file's C{store} key) and against a PostgreSQL that the tests start themselves
(initdb and pg_ctl into a temporary folder, on a free port below the ephemeral range).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from hvac_push.core.points import Point
from hvac_push.store.interface import JournalEntry, Retention
from hvac_push.transport.auth import hash_token
from tests.wsprobe import bound_ports, restartable_port

ROOT = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).with_name("twistd"))
#: Debian's server binaries, newest version first (15 on bookworm).
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), default=Path("/usr/lib/postgresql/15/bin"))
OPERATOR = "operator-token-0123456789abcdefghijklmnop"
VIEWER = "viewer-token-0123456789abcdefghijklmnopqrst"
ALARM = "plant/chiller-1/supply_temp:high"
TEMP = "plant/chiller-1/supply_temp"
ENERGY = "plant/chiller-1/energy_kwh"
STARTS = "plant/chiller-1/compressor_starts"
SHELVED = "plant/chiller-1/return_temp:high"


# -- a private PostgreSQL ------------------------------------------------------------


class PostgresServer:
    """A throw-away PostgreSQL cluster in its own folder, on a free loopback port."""

    def __init__(self) -> None:
        if not (PG_BIN / "pg_ctl").exists():
            raise RuntimeError(f"no PostgreSQL server in {PG_BIN}: apt-get install postgresql (scripts/bootstrap --test)")
        self.folder = Path(tempfile.mkdtemp(prefix="hvac-pg-"))
        #: Picked (postgres cannot report a port it chose) below the ephemeral range, as it is restarted on it.
        self.port = restartable_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "hvac", "-N")
        for attempt in range(3):  # the picked port may have been taken meanwhile: then another one
            try:
                self.start()
                break
            except subprocess.CalledProcessError:
                log = (self.folder / "log").read_text(errors="replace") if (self.folder / "log").exists() else ""
                if attempt == 2 or "could not bind" not in log:
                    raise
                self.port = restartable_port()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as_owner, str(PG_BIN / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://hvac@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{os.urandom(6).hex()}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


# -- a blocking WebSocket client that can also send -------------------------------------


class Ws:
    def __init__(self, port: int, token: str):
        #: Ids of every alarm transition read so far, also those L{until} passed over while it waited.
        self.alarms_seen: set[str] = set()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_json(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message).encode()
        mask = os.urandom(4)
        assert len(payload) < 65536
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        length = bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0xFE]) + struct.pack(">H", len(payload))
        self.sock.sendall(b"\x81" + length + mask + masked)

    def _need(self, count: int) -> None:
        while len(self.buffer) < count:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk

    def next(self) -> dict[str, Any]:
        while True:
            self._need(2)
            length, start = self.buffer[1] & 0x7F, 2
            if length == 126:
                self._need(4)
                length, start = struct.unpack(">H", self.buffer[2:4])[0], 4
            elif length == 127:
                self._need(10)
                length, start = struct.unpack(">Q", self.buffer[2:10])[0], 10
            self._need(start + length)
            opcode = self.buffer[0] & 0x0F
            payload, self.buffer = self.buffer[start:start + length], self.buffer[start + length:]
            if opcode == 1:
                message: dict[str, Any] = json.loads(payload)
                if message["type"] == "alarm":
                    self.alarms_seen.add(message["alarm"]["id"])
                return message

    def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.next()
            if predicate(message):
                return message
        raise AssertionError("no such message in time")

    def close(self) -> None:
        self.sock.close()


# -- the server under test ----------------------------------------------------------------


PLANT = """
{store}
[simulator]
units = {units}
rate = 150
seed = 7

[units.chiller-1]
source = "simulator"
[units.chiller-1.points.supply_temp.alarm]
high = -50.0
[units.chiller-1.points.return_temp.alarm]
high = -50.0

[derived]
"""


def write_files(folder: Path, units: int, store_key: str) -> Path:
    (folder / "tokens.toml").write_text(
        f'[[token]]\nname = "operator"\nsha256 = "{hash_token(OPERATOR)}"\npoints = ["#"]\nack = true\nshelve = true\n'
        f'[[token]]\nname = "viewer"\nsha256 = "{hash_token(VIEWER)}"\npoints = ["plant/chiller-1/#"]\n'
    )
    plant = folder / "plant.toml"
    plant.write_text(PLANT.format(store=store_key, units=units))
    return plant


def twistd(folder: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    """twistd on a port the kernel picks, and that port (read from its --port-file)."""
    port_file = folder / "twistd.ports"
    port_file.unlink(missing_ok=True)
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "hvacpush", "--listen", "tcp:0:interface=127.0.0.1", "--port-file", str(port_file),
         "--config", "plant.toml", "--auth-token-file", "tokens.toml", *args],
        cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        [port] = bound_ports(port_file, alive=lambda: process.poll() is None)
    except (RuntimeError, TimeoutError) as e:
        raise AssertionError(f"twistd did not listen ({e}): {stop(process)}") from None
    return process, port


def http(port: int, path: str, token: str | None = OPERATOR) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(process: subprocess.Popen[str], port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"twistd exited: {process.stdout.read() if process.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if json.load(response)["ready"]:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("not ready in time")
        time.sleep(0.1)


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.stdout.read() if process.stdout else ""


def metric(port: int, name: str) -> float:
    _, body = http(port, "/metrics", token=None)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def live(message: dict[str, Any], point_id: str, check: Callable[[dict[str, Any]], bool] = lambda p: True) -> bool:
    point = message.get("points", {}).get(point_id) if message["type"] in ("snapshot", "update") else None
    return point is not None and point["status"] == "ok" and check(point)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_history_alarms_acks_and_totals_survive_a_kill_9(tmp_path, backend, request):
    args: tuple[str, ...]
    if backend == "sqlite":
        store_key, args = 'store = "sqlite:plant.db"', ()
    else:
        store_key, args = "", ("--store", request.getfixturevalue("postgres").new_database())
    started = time.time()

    # -- first life: stream, acknowledge with a comment, then SIGKILL
    write_files(tmp_path, units=2, store_key=store_key)
    first, port = twistd(tmp_path, *args)
    try:
        wait_ready(first, port)
        ws = Ws(port, OPERATOR)
        snapshot = ws.next()
        assert snapshot["type"] == "snapshot"
        # An alarm raised after the snapshot arrives as a transition, possibly while we wait for another message.
        if not any(a["id"] == ALARM for a in snapshot["alarms"]) and ALARM not in ws.alarms_seen:
            ws.until(lambda m: m["type"] == "alarm" and m["alarm"]["id"] == ALARM)
        ws.send_json({"type": "ack", "alarm": ALARM, "comment": "pump restarted"})
        # acked comes only once the journal has it: the SIGKILL below may follow it at once.
        ws.until(lambda m: m == {"type": "acked", "alarm": ALARM})
        if not any(a["id"] == SHELVED for a in snapshot["alarms"]) and SHELVED not in ws.alarms_seen:
            ws.until(lambda m: m["type"] == "alarm" and m["alarm"]["id"] == SHELVED)
        ws.send_json({"type": "shelve", "alarm": SHELVED, "minutes": 60, "comment": "sensor swap"})
        shelved_until = ws.until(lambda m: m["type"] == "shelved" and m["alarm"] == SHELVED)["until"]
        assert shelved_until > time.time() + 3500
        ws.until(lambda m: live(m, ENERGY, lambda p: p["value"] > 0))
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # a couple of seconds of the live stream
            message = ws.next()
            if message["type"] in ("snapshot", "update"):
                seen.update(message["points"])
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        ws.close()
    finally:
        stop(first)
    killed = time.time()
    assert seen[ENERGY]["value"] > 0

    # -- second life on the same data, with one simulated unit fewer
    write_files(tmp_path, units=1, store_key=store_key)
    second, port = twistd(tmp_path, *args)  # a new port: nothing here needs the old one
    try:
        wait_ready(second, port)
        # The last values are back; those nothing feeds any more stay stale.
        ws = Ws(port, OPERATOR)
        snapshot = ws.next()
        crac = {k: v for k, v in snapshot["points"].items() if k.startswith("plant/crac-1/")}
        assert crac and all(p["status"] == "stale" for p in crac.values())
        # The alarm list, with who acknowledged and why.
        alarm = next(a for a in snapshot["alarms"] if a["id"] == ALARM)
        assert (alarm["state"], alarm["by"], alarm["comment"]) == ("acknowledged", "operator", "pump restarted")
        # The shelved alarm stays shelved, until the end it was given before the kill.
        shelved = next(a for a in snapshot["alarms"] if a["id"] == SHELVED)
        assert (shelved["state"], shelved["shelved_until"]) == ("shelved", shelved_until)

        # History from before the kill, JSON and CSV: at most the last second is lost.
        newest_seen = seen[TEMP]["ts"]
        code, body = http(port, f"/api/history?points={TEMP}&from={started - 5}&to={killed}")
        assert code == 200
        samples = json.loads(body)["points"][TEMP]
        assert len(samples) > 10 and samples[-1][0] >= newest_seen - 1.0
        code, body = http(port, f"/api/history?points={TEMP}&from={started - 5}&to={killed}&format=csv")
        rows = list(csv.reader(io.StringIO(body.decode())))
        assert code == 200 and rows[0] == ["ts", "point", "value"] and len(rows) == len(samples) + 1
        code, body = http(port, f"/api/history?points={TEMP}&from={started - 5}&to={killed}&step=60")
        assert code == 200 and json.loads(body)["points"][TEMP]

        # The same history over the WebSocket: several points (an id and a pattern) in one request.
        ws.send_json({"type": "history", "points": [TEMP, "plant/crac-1/+"], "from": started - 5, "to": killed})
        answer = ws.until(lambda m: m["type"] == "history")
        assert answer["points"][TEMP] == samples and answer["step"] is None
        crac_ids = [k for k in answer["points"] if k.startswith("plant/crac-1/")]
        assert "plant/crac-1/supply_temp" in crac_ids and all(answer["points"][k] for k in crac_ids)
        ws.send_json({"type": "history", "points": [TEMP], "from": f"{started - 5}", "to": killed, "step": "1m",
                      "agg": "max"})
        answer = ws.until(lambda m: m["type"] == "history")
        _, body = http(port, f"/api/history?points={TEMP}&from={started - 5}&to={killed}&step=1m&agg=max")

        def closed_minutes(rows: list[list[float]]) -> list[list[float]]:
            return [row for row in rows if row[0] + 60 <= killed]  # the kill's minute may fill up meanwhile

        assert (answer["step"], answer["agg"]) == (60, "max") and answer["points"][TEMP]
        assert closed_minutes(answer["points"][TEMP]) == closed_minutes(json.loads(body)["points"][TEMP])
        # A viewer's token reads its own points only, as over HTTP.
        viewer = Ws(port, VIEWER)
        viewer.send_json({"type": "history", "points": [TEMP, "plant/crac-1/supply_temp"], "from": started - 5})
        refused = viewer.until(lambda m: m["type"] in ("history", "error"))
        assert (refused["type"], refused["error"]) == ("error", "forbidden")
        viewer.send_json({"type": "history", "points": ["plant/chiller-1/+"], "from": started - 5, "to": killed})
        mine = viewer.until(lambda m: m["type"] == "history")
        assert TEMP in mine["points"] and all(k.startswith("plant/chiller-1/") for k in mine["points"])
        viewer.close()

        # The journal: who acknowledged, and the comment; a viewer token sees its points only.
        code, body = http(port, f"/api/alarms/journal?from={started - 5}")
        acks = [e for e in json.loads(body)["journal"] if e["state"] == "acknowledged" and e["alarm"] == ALARM]
        assert code == 200 and [(e["by"], e["comment"]) for e in acks] == [("operator", "pump restarted")]
        code, body = http(port, f"/api/history?points=plant/crac-1/supply_temp&from={started - 5}", token=VIEWER)
        assert code == 403
        assert http(port, f"/api/history?points={TEMP}", token=None)[0] == 401

        # Totals continue from where they were, not from zero.
        restored = snapshot["points"][ENERGY]["value"]
        assert restored >= seen[ENERGY]["value"]
        ws.until(lambda m: live(m, ENERGY, lambda p: p["value"] > restored))
        if STARTS in seen:
            ws.until(lambda m: live(m, STARTS, lambda p: p["value"] >= seen[STARTS]["value"]))

        if backend == "postgresql":
            # The database goes away at run time: counted in /metrics, the stream goes on, writing resumes.
            pg = request.getfixturevalue("postgres")
            pg.stop()
            try:
                deadline = time.monotonic() + 20
                while metric(port, "hvacpush_store_write_failures_total") < 1:
                    assert time.monotonic() < deadline
                    ws.next()
                assert metric(port, "hvacpush_store_writing") == 0
                ws.until(lambda m: live(m, TEMP))  # still streaming
            finally:
                pg.start()
            deadline = time.monotonic() + 60
            while metric(port, "hvacpush_store_writing") != 1:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert metric(port, "hvacpush_store_samples_dropped_total") == 0
            now = time.time()
            time.sleep(1.0)
            code, body = http(port, f"/api/history?points={TEMP}&from={now - 30}&to={now}")
            assert code == 200 and json.loads(body)["points"][TEMP]  # written while it was away, too
        ws.close()
    finally:
        output = stop(second)
    assert "Traceback" not in output, output


# -- the PostgreSQL store itself -------------------------------------------------------------


def test_postgresql_round_trip_rollups_journal_and_a_database_that_goes_away(postgres):
    from hvac_push.store.postgres import PostgresStore
    from hvac_push.store.writer import StoreWriter
    from hvac_push.store.query import series

    url = postgres.new_database()
    store = PostgresStore(url)
    store.open()
    assert "hvac@" in store.description
    t0 = 1_800_000_000.0
    p = "plant/chiller-1/supply_temp"
    try:
        store.write([Point(p, v, "degC", t0 + i * 20, "ok", 0) for i, v in enumerate([5.0, 7, True, 6.5])]
                    + [Point("plant/x/mode", "cool", "", t0, "ok", 0)],
                   [JournalEntry(t0, 1, f"{p}:high", p, "high", "acknowledged", "major", 9.5, 9.0, "m", "ann", "ok")])
        assert store.raw(p, t0, t0 + 60, 10) == [(t0, 5.0), (t0 + 20, 7), (t0 + 40, True), (t0 + 60, 6.5)]
        assert store.raw("plant/x/mode", t0, t0, 10) == [(t0, "cool")]
        assert series(store, p, t0, t0 + 119, 60.0, "max") == [[t0, 7.0], [t0 + 60, 6.5]]
        assert store.current_alarms()[0].comment == "ok" and store.last_seq() == 1
        assert store.expire(t0 + 8 * 86400, Retention()) == 5  # the raw samples; rollups stay

        writer = StoreWriter(store, retry_min=0.05, retry_max=0.2)
        writer.start()
        try:
            postgres.stop()
            writer.add_samples([Point(p, float(i), "degC", t0 + 1000 + i, "ok", 0) for i in range(100)])
            deadline = time.monotonic() + 20
            while writer.stats.failures < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert not writer.stats.healthy and writer.pending == 100
        finally:
            postgres.start()
        assert writer.wait_idle(30)
        recovered = writer.stats  # the writer thread changed it while we waited
        assert recovered.healthy and recovered.samples_dropped == 0
        assert len(store.raw(p, t0 + 1000, t0 + 1100, 1000)) == 100
        writer.close()
        assert writer.join(10)
    finally:
        store.close()
