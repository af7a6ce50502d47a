"""The alarm journal: confirmations wait for the commit, retention on a fake clock, shelves that outlive a restart."""

from __future__ import annotations

import json

import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest
from twisted.internet.task import Clock

from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.core.hub import Hub
from hvac_push.core.points import AlarmLimits, Point, PointMeta, Sample
from hvac_push.store.interface import JournalEntry, Retention, StoreError
from hvac_push.store.recorder import StoreService
from hvac_push.store.sqlite import SqliteStore
from hvac_push.store.url import parse_retention
from hvac_push.transport.auth import ALL
from hvac_push.transport.store_answers import answer_after_journal
from hvac_push.transport.wire import RequestId
from tests.test_store import stop

T0 = 1_800_000_000.0
P = "plant/chiller-1/supply_temp"
ALARM = f"{P}:high"
DAY = 86400.0


class ThreadClock(Clock):
    """A fake clock that also takes calls from other threads, run when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.from_threads.put((f, args))

    def run_from_threads(self, timeout: float = 10.0) -> None:
        """Run the next call a thread handed over (waiting for it up to C{timeout})."""
        f, args = self.from_threads.get(timeout=timeout)
        f(*args)


class GatedStore(SqliteStore):
    """A SQLite store whose writes wait until the test opens the gate."""

    def __init__(self, path: str):
        super().__init__(path)
        self.gate = threading.Event()
        self.fail = False

    def write(self, samples: Sequence[Point], journal: Sequence[JournalEntry]) -> None:
        self.gate.wait(10)
        if self.fail:
            raise StoreError("sqlite: disk I/O error")
        super().write(samples, journal)


class Answers:
    """A connection as L{answer_after_journal} sees it: what it was sent."""

    permissions = ALL

    def __init__(self, request_id: RequestId | None = None) -> None:
        self.request_id = request_id
        self.sent: list[bytes] = []
        self.errors: list[tuple[str, str]] = []

    def send_bytes(self, payload: bytes) -> None:
        message = json.loads(payload) if payload.startswith(b"{") else {}
        if message.get("type") == "error":
            assert message.get("id") == self.request_id
            self.errors.append((message["error"], message["detail"]))
        else:
            self.sent.append(payload)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[GatedStore]:
    opened = GatedStore(str(tmp_path / "journal.db"))
    opened.gate.set()
    opened.open()
    opened.gate.clear()
    yield opened
    opened.gate.set()
    opened.close()


def alarmed_life(store: SqliteStore, clock: Clock) -> tuple[Hub, AlarmEngine, StoreService]:
    """A hub, an alarm engine restored from and recording into C{store}, with C{ALARM} raised if not yet listed."""
    hub = Hub(epoch="E", clock=clock.seconds)
    service = StoreService(store, clock)
    service.restore(hub)
    engine = AlarmEngine(hub, clock)
    service.restore_alarms(engine)
    service.follow(hub, engine)
    hub.configure(P, PointMeta(limits=AlarmLimits(high=9.0)))
    service.startService()
    return hub, engine, service


# -- acknowledgements are confirmed only once they are committed -------------------------


def test_acked_is_sent_only_after_the_ack_is_committed_to_the_journal(gated):
    clock = ThreadClock()
    clock.advance(T0)
    hub, engine, service = alarmed_life(gated, clock)
    try:
        hub.publish(Sample(P, 9.5, "degC", T0))
        client = Answers()
        engine.ack(ALARM, by="alice", comment="valve checked")
        answer_after_journal(client, service, b'{"type":"acked"}')
        assert client.sent == []  # the writer is still held at the gate: nothing is committed yet
        with pytest.raises(queue.Empty):
            clock.run_from_threads(timeout=0.2)
        assert [e.state for e in gated.journal(0, 2e9, 10)] == []
        gated.gate.set()
        clock.run_from_threads()
        assert client.sent == [b'{"type":"acked"}']
        acks = [e for e in gated.journal(0, 2e9, 10) if e.state == "acknowledged"]
        assert [(e.by, e.comment) for e in acks] == [("alice", "valve checked")]
    finally:
        gated.gate.set()
        stop(service)


def test_a_confirmation_the_store_could_not_record_is_an_error_not_acked(gated):
    clock = ThreadClock()
    clock.advance(T0)
    hub, engine, service = alarmed_life(gated, clock)
    gated.fail = True
    hub.publish(Sample(P, 9.5, "degC", T0))
    engine.ack(ALARM, by="alice")
    client = Answers()
    answer_after_journal(client, service, b'{"type":"acked"}')
    gated.gate.set()  # every attempt fails from now on; the writer gives up when it is closed
    stop(service)
    clock.run_from_threads()
    assert client.sent == []
    assert [code for code, _ in client.errors] == ["store_unavailable"]


def test_without_a_store_the_confirmation_is_sent_at_once_and_with_a_stopped_one_it_is_an_error(tmp_path):
    client = Answers()
    answer_after_journal(client, None, b"x")
    assert client.sent == [b"x"]
    store = SqliteStore(str(tmp_path / "stopped.db"))
    stopped = StoreService(store, Clock())  # never started (or already stopped): nothing would be written
    answer_after_journal(client, stopped, b"y")
    assert client.sent == [b"x"] and [code for code, _ in client.errors] == ["store_unavailable"]


# -- retention of the journal -------------------------------------------------------------


def entry(ts: float, seq: int, alarm: str, state: str) -> JournalEntry:
    point_id = alarm.partition(":")[0]
    return JournalEntry(ts, seq, alarm, point_id, "high", state, "major", 9.5, 9.0, "above 9")


def test_journal_retention_runs_in_the_background_and_keeps_what_the_alarm_list_needs(tmp_path):
    store = SqliteStore(str(tmp_path / "retention.db"))
    store.open()
    clock = Clock()
    clock.advance(T0)
    service = StoreService(store, clock, retention=Retention(journal=30 * DAY), expire_every=3600.0)
    service.startService()
    try:
        old = [
            entry(T0, 1, "plant/a/x:high", "active"),
            entry(T0 + 5, 2, "plant/a/x:high", "normal"),  # a whole life, over: may go
            entry(T0 + 6, 3, "plant/b/x:high", "active"),
            entry(T0 + 7, 4, "plant/b/x:high", "acknowledged"),  # still listed: its latest entry stays
        ]
        service.writer.add_journal(old)
        assert service.writer.wait_idle(10)
        clock.advance(29 * DAY)  # retention runs every hour of the fake clock; nothing is 30 days old yet
        assert service.writer.wait_idle(10)
        assert len(store.journal(0, 2e9, 100)) == 4
        service.writer.add_journal([entry(T0 + 29 * DAY, 5, "plant/c/x:high", "active")])
        clock.advance(2 * DAY)
        assert service.writer.wait_idle(10)
        kept = store.journal(0, 2e9, 100)
        assert [e.seq for e in kept] == [4, 5]
        assert [e.alarm for e in store.current_alarms()] == ["plant/b/x:high", "plant/c/x:high"]
        assert store.last_seq() == 5
    finally:
        stop(service)


def test_journal_retention_is_the_optional_fourth_duration():
    assert parse_retention("7d,365d,5y") == Retention(7 * DAY, 365 * DAY, 5 * 365 * DAY, 5 * 365 * DAY)
    assert parse_retention("7d,90d,5y,10y").journal == 10 * 365 * DAY
    with pytest.raises(ValueError):
        parse_retention("7d,90d,5y,10y,1d")
    with pytest.raises(ValueError):
        Retention(journal=0)


# -- a shelve outlives a restart until its end ------------------------------------------


def test_a_restart_keeps_a_shelved_alarm_hidden_until_its_shelve_ends_and_shows_it_then(tmp_path):
    path = str(tmp_path / "shelve.db")
    first = SqliteStore(path)
    first.open()
    clock = Clock()
    clock.advance(T0)
    hub, engine, service = alarmed_life(first, clock)
    hub.publish(Sample(P, 9.5, "degC", T0))
    shelved = engine.shelve(ALARM, 60, by="alice", comment="sensor being replaced")
    assert shelved.shelved_until == T0 + 3600
    stop(service)
    engine.close()

    clock.advance(600)  # down for ten minutes
    second = SqliteStore(path)
    second.open()
    hub2, engine2, service2 = alarmed_life(second, clock)
    try:
        sent: list[str] = []
        engine2.add_listener(lambda seq, alarm: sent.append(alarm.state))
        restored = engine2.alarms[ALARM]
        assert (restored.state, restored.shelved_until) == ("shelved", T0 + 3600)
        hub2.publish(Sample(P, 9.6, "degC", T0 + 601))  # still above its limit: still hidden
        clock.advance(3600 - 600 - 1)
        assert sent == [] and engine2.alarms[ALARM].state == "shelved"
        clock.advance(1)  # the shelve's end, as journalled
        assert sent == ["active"] and engine2.alarms[ALARM].state == "active"
    finally:
        stop(service2)
        engine2.close()


def test_a_journal_made_before_shelve_ends_were_kept_gets_the_column(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE alarm_journal (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, seq INTEGER, alarm TEXT, "
        "point TEXT, kind TEXT, state TEXT, severity TEXT, num REAL, txt TEXT, alarm_limit REAL, message TEXT, "
        "acked_by TEXT, comment TEXT)"
    )
    conn.execute("INSERT INTO alarm_journal (ts, seq, alarm, point, kind, state, severity, num, message) "
                 "VALUES (1.0, 1, 'plant/a/x:high', 'plant/a/x', 'high', 'active', 'major', 9.5, 'above')")
    conn.commit()
    conn.close()
    store = SqliteStore(str(path))
    store.open()
    try:
        (listed,) = store.current_alarms()
        assert (listed.alarm, listed.shelved_until) == ("plant/a/x:high", None)
        store.write([], [entry(2.0, 2, "plant/a/x:high", "shelved")])
    finally:
        store.close()


def test_a_confirmation_sent_after_the_commit_echoes_the_id_of_the_request_it_answers(gated):
    clock = ThreadClock()
    clock.advance(T0)
    hub, engine, service = alarmed_life(gated, clock)
    try:
        hub.publish(Sample(P, 9.5, "degC", T0))
        engine.ack(ALARM, by="alice")
        client = Answers(request_id="ack-7")
        answer_after_journal(client, service, b'{"type":"acked"}')
        client.request_id = None  # the connection has moved on to its next message
        gated.gate.set()
        clock.run_from_threads()
        assert client.sent == [b'{"id":"ack-7","type":"acked"}']
    finally:
        gated.gate.set()
        stop(service)
