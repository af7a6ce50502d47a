"""The store: SQLite round trips, rollups, retention on a fake clock, faults, restore; the options that choose it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.python import usage

from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.analytics.derived import DerivedPoints, DerivedSettings
from hvac_push.analytics.history import History
from hvac_push.core.hub import Hub
from hvac_push.core.points import AlarmLimits, Point, PointMeta, Sample
from hvac_push.store.interface import HOUR, MINUTE, JournalEntry, Retention, StoreError
from hvac_push.store.query import QueryError, choose_step, series
from hvac_push.store.recorder import StoreService
from hvac_push.store.sqlite import SqliteStore
from hvac_push.store.url import check_store_url, make_store, open_store
from hvac_push.store.writer import StoreWriter
from tests.helpers import point_of
from tests.logwatch import LogWatch, watch_log

T0 = 1_800_000_000.0  # a whole hour: 2027-01-15T08:00:00Z
P = "plant/chiller-1/supply_temp"


def point(point_id: str, value: Any, ts: float, unit: str = "degC", status: str = "ok") -> Point:
    return Point(point_id, value, unit, ts, status, 0)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(str(tmp_path / "test.db"))
    opened.open()
    yield opened
    opened.close()


def start(service: StoreService) -> None:
    service.startService()


def stop(service: StoreService) -> None:
    """stopService without a real reactor: the same steps, joined here."""
    for loop in (service._flush_loop, service._expire_loop):
        if loop.running:
            loop.stop()
    service.flush()
    service.writer.close()
    assert service.writer.join(10)
    service._pool.stop()
    service.store.close()


# -- the SQL store ------------------------------------------------------------------


def test_values_of_every_type_come_back_as_written(store):
    store.write(
        [point(P, 6.5, T0), point(P, 7, T0 + 1), point("plant/chiller-1/compressor", True, T0),
         point("plant/chiller-1/mode", "cooling", T0, unit="")],
        [],
    )
    assert store.raw(P, T0, T0 + 10, 100) == [(T0, 6.5), (T0 + 1, 7)]
    assert store.raw("plant/chiller-1/compressor", T0, T0, 10) == [(T0, True)]
    assert store.raw("plant/chiller-1/mode", 0, T0 + 10, 10) == [(T0, "cooling")]
    assert store.point_ids() == ["plant/chiller-1/compressor", "plant/chiller-1/mode", P]
    last = {p.point_id: p for p in store.last_values()}
    assert last[P].value == 7 and last[P].ts == T0 + 1 and last[P].unit == "degC"
    assert last["plant/chiller-1/mode"].value == "cooling"


def test_a_sample_written_twice_is_kept_once_and_last_values_never_go_back(store):
    store.write([point(P, 1.0, T0 + 5)], [])
    store.write([point(P, 2.0, T0 + 5), point(P, 0.5, T0 + 1)], [])
    assert store.raw(P, 0, T0 + 10, 10) == [(T0 + 1, 0.5), (T0 + 5, 2.0)]
    assert store.last_values()[0].value == 2.0


def test_rollups_per_minute_and_hour_merge_across_batches(store):
    store.write([point(P, v, T0 + i * 10) for i, v in enumerate([5.0, 7.0, 6.0])], [])  # minute 0
    store.write([point(P, 9.0, T0 + 50), point(P, 1.0, T0 + 70)], [])  # minute 0, then minute 1
    minute = store.buckets(P, MINUTE, T0, T0 + 3600)
    assert [(b.start, b.min, b.max, b.count, b.last) for b in minute] == [
        (T0, 5.0, 9.0, 4, 9.0), (T0 + 60, 1.0, 1.0, 1, 1.0)
    ]
    assert minute[0].sum / minute[0].count == pytest.approx(6.75)
    hour = store.buckets(P, HOUR, T0, T0 + 3600)
    assert [(b.start, b.min, b.max, b.count, b.last) for b in hour] == [(T0, 1.0, 9.0, 5, 1.0)]


def test_history_queries_use_raw_samples_for_short_ranges_and_rollups_with_a_step(store):
    store.write([point(P, float(i % 7), T0 + i * 15) for i in range(8 * 60 * 4)], [])  # 8 hours, every 15 s
    raw = series(store, P, T0, T0 + 60, None, "mean")
    assert raw == [[T0, 0.0], [T0 + 15, 1.0], [T0 + 30, 2.0], [T0 + 45, 3.0], [T0 + 60, 4.0]]
    per_minute = series(store, P, T0, T0 + 119, 60.0, "max")
    assert per_minute == [[T0, 3.0], [T0 + 60, 6.0]]
    per_two = series(store, P, T0, T0 + 119, 120.0, "mean")
    assert per_two == [[T0, pytest.approx(sum(i % 7 for i in range(8)) / 8)]]
    hourly = series(store, P, T0, T0 + 8 * 3600, 3600.0, "last")
    assert len(hourly) == 8 and hourly[0] == [T0, float(239 % 7)]
    by_30s = series(store, P, T0, T0 + 59, 30.0, "min")  # below a minute: grouped from raw samples
    assert by_30s == [[T0, 0.0], [T0 + 30, 2.0]]


def test_choose_step_picks_raw_or_an_automatic_step_and_refuses_too_many_values():
    assert choose_step(T0, T0 + 3600, None) is None
    assert choose_step(T0, T0 + 86400, None) == 60.0
    assert choose_step(T0, T0 + 30 * 86400, None) == 1800.0
    assert choose_step(T0, T0 + 86400, 300.0) == 300.0
    with pytest.raises(QueryError, match="larger step"):
        choose_step(T0, T0 + 86400, 1.0)


def test_the_journal_keeps_who_acknowledged_and_why_and_lists_current_alarms(store):
    raised = JournalEntry(T0, 1, f"{P}:high", P, "high", "active", "major", 9.5, 9.0, "above 9")
    acked = JournalEntry(T0 + 5, 2, f"{P}:high", P, "high", "acknowledged", "major", 9.5, 9.0, "above 9",
                         "alice", "checked the valve")
    other = JournalEntry(T0 + 6, 3, "plant/x/y:low", "plant/x/y", "low", "active", "minor", 1, 2.0, "below 2")
    gone = JournalEntry(T0 + 7, 4, "plant/x/y:low", "plant/x/y", "low", "returned", "minor", 3, 2.0, "below 2")
    done = JournalEntry(T0 + 8, 5, "plant/x/y:low", "plant/x/y", "low", "normal", "minor", 3, 2.0, "below 2")
    store.write([], [raised, acked, other])
    store.write([], [gone, done])
    assert store.journal(T0, T0 + 100, 100) == [raised, acked, other, gone, done]
    assert store.journal(T0 + 5, T0 + 6, 100) == [acked, other]
    assert store.current_alarms() == [acked]
    assert store.last_seq() == 5


# -- retention on the reactor's clock -------------------------------------------------


def test_retention_runs_on_the_reactors_clock_and_keeps_each_kind_for_its_period(store):
    clock = Clock()
    clock.advance(T0)
    hub = Hub(epoch="E", clock=clock.seconds)
    retention = Retention(raw=7 * 86400, minute=30 * 86400, hour=365 * 86400)
    service = StoreService(store, clock, retention=retention, expire_every=3600.0)
    service.follow(hub)
    start(service)
    try:
        hub.publish(Sample(P, 1.0, "degC", T0 + 1))
        hub.publish(Sample(P, 3.0, "degC", T0 + 2))
        clock.advance(0.25)  # the flush
        assert service.writer.wait_idle(10)
        assert len(store.raw(P, 0, 2e9, 10)) == 2

        clock.advance(6 * 86400)  # hourly retention runs; nothing is old enough yet
        assert service.writer.wait_idle(10)
        assert len(store.raw(P, 0, 2e9, 10)) == 2
        clock.advance(2 * 86400)  # past 7 days: raw samples go, rollups stay
        assert service.writer.wait_idle(10)
        assert store.raw(P, 0, 2e9, 10) == []
        assert [b.sum / b.count for b in store.buckets(P, MINUTE, 0, 2e9)] == [2.0]
        clock.advance(30 * 86400)  # past 30 days: minute rollups go
        assert service.writer.wait_idle(10)
        assert store.buckets(P, MINUTE, 0, 2e9) == []
        assert len(store.buckets(P, HOUR, 0, 2e9)) == 1
        clock.advance(400 * 86400)
        assert service.writer.wait_idle(10)
        assert store.buckets(P, HOUR, 0, 2e9) == []
        assert service.expired >= 0
    finally:
        stop(service)


def test_samples_are_handed_over_in_batches_and_status_changes_are_not_new_samples(store):
    clock = Clock()
    clock.advance(T0)
    hub = Hub(epoch="E", clock=clock.seconds)
    service = StoreService(store, clock, flush_every=0.25)
    service.follow(hub)
    start(service)
    try:
        hub.publish_many([Sample(P, 1.0, "degC", T0), Sample("plant/chiller-1/power", 50.0, "kW", T0)])
        hub.set_status([P], "stale")
        hub.publish(Sample(P, 2.0, "degC", T0 + 1))
        assert service.writer.stats.transactions == 0  # nothing written before the flush
        clock.advance(0.25)
        assert service.writer.wait_idle(10)
        assert service.writer.stats.transactions == 1
        assert store.raw(P, 0, 2e9, 10) == [(T0, 1.0), (T0 + 1, 2.0)]
    finally:
        stop(service)


# -- faults -----------------------------------------------------------------------------


def test_a_full_disk_is_counted_and_logged_once_and_writing_resumes_without_loss(store, tmp_path):
    store.write([point(P, 0.0, T0)], [])
    pages = sqlite3.connect(tmp_path / "test.db").execute("PRAGMA page_count").fetchone()[0]
    store.page_limit = pages  # the "disk" is now full
    writer = StoreWriter(store, retry_min=0.01, retry_max=0.05)

    def store_errors(log: LogWatch) -> list[str]:
        return [e["log_format"] for e in log.events
                if e.get("log_namespace", "").startswith("hvac_push.store") and e["log_level"] == LogLevel.error]

    with watch_log() as log:
        writer.start()
        try:
            writer.add_samples([point(P, float(i), T0 + 1 + i) for i in range(5000)])
            writer.add_journal([JournalEntry(T0, 1, f"{P}:high", P, "high", "acknowledged", "major", 1, 0.0, "", "bob", "ok")])
            for _ in range(500):
                if writer.stats.failures >= 3:
                    break
                time.sleep(0.01)
            assert writer.stats.failures >= 3 and not writer.stats.healthy
            assert "full" in writer.stats.last_error
            for _ in range(500):  # between two attempts (not while one holds the batch) all of it waits
                if writer.pending == 5001:
                    break
                time.sleep(0.001)
            assert writer.pending == 5001
            assert sum("writing failed" in e for e in store_errors(log)) == 1  # logged once, not per attempt
            store.page_limit = None  # space again
            assert writer.wait_idle(10)
            recovered = writer.stats  # the writer thread changed it while we waited
            assert recovered.healthy and recovered.samples_dropped == 0
            assert len(store.raw(P, 0, 2e9, 10_000)) == 5001
            assert store.current_alarms()[0].by == "bob"
        finally:
            writer.close()
            writer.join(10)


def test_past_its_bound_the_writer_drops_the_oldest_samples_and_counts_them(store):
    store.page_limit = 1  # nothing can be written
    writer = StoreWriter(store, max_pending=100, retry_min=10, retry_max=10)
    writer.add_samples([point(P, float(i), T0 + i) for i in range(150)])
    assert writer.stats.samples_dropped == 50 and writer.pending == 100
    store.page_limit = None
    writer.start()
    try:
        assert writer.wait_idle(10)
        assert [ts for ts, _ in store.raw(P, 0, 2e9, 1000)][0] == T0 + 50
    finally:
        writer.close()
        writer.join(10)


def test_a_store_that_cannot_be_opened_is_one_line(tmp_path):
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:{tmp_path}/missing/folder/x.db")
    assert "\n" not in str(caught.value) and "missing" in str(caught.value)
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a database"):
        open_store(f"sqlite:{tmp_path}/junk.db")


# -- restore --------------------------------------------------------------------------


def first_life(store: SqliteStore, clock: Clock) -> tuple[Hub, AlarmEngine, StoreService]:
    hub = Hub(epoch="E1", clock=clock.seconds)
    service = StoreService(store, clock)
    service.restore(hub)
    engine = AlarmEngine(hub, clock)
    service.restore_alarms(engine)
    service.follow(hub, engine)
    return hub, engine, service


def test_last_values_alarms_and_acknowledgements_come_back_after_a_restart(store):
    clock = Clock()
    clock.advance(T0)
    hub, engine, service = first_life(store, clock)
    start(service)
    hub.configure(P, PointMeta(limits=AlarmLimits(high=9.0)))
    hub.publish(Sample(P, 9.5, "degC", T0))
    hub.publish(Sample("plant/chiller-1/mode", "cooling", "", T0))
    clock.advance(30)
    engine.ack(f"{P}:high", by="alice", comment="valve checked")
    seq = engine.seq
    clock.advance(0.25)
    stop(service)

    store.open()
    hub2, engine2, service2 = first_life(store, clock)
    restored = hub2.get(P)
    assert restored is not None and (restored.value, restored.status, restored.ts) == (9.5, "stale", T0)
    assert hub2.get("plant/chiller-1/mode").value == "cooling"  # type: ignore[union-attr]
    alarm = engine2.alarms[f"{P}:high"]
    assert (alarm.state, alarm.by, alarm.comment) == ("acknowledged", "alice", "valve checked")
    assert (alarm.ts, alarm.since) == (T0 + 30, T0)  # acknowledged later; raised when the value crossed
    assert engine2.seq == seq
    # The restored (stale) point raised no stale alarm; the next sample continues the life of the alarm.
    assert f"{P}:stale" not in engine2.alarms
    hub2.configure(P, PointMeta(limits=AlarmLimits(high=9.0)))
    hub2.publish(Sample(P, 7.0, "degC", T0 + 10))
    assert f"{P}:high" not in engine2.alarms  # acknowledged, then cleared: normal
    assert engine2.seq == seq + 1
    history = History(hub2)
    service2.preload(history, T0 + 10)
    assert history.samples(P, 0, T0 + 10) == [(T0, 9.5), (T0 + 10, 7.0)]


def test_energy_totals_and_compressor_starts_continue_across_a_restart(store):
    clock = Clock()
    clock.advance(T0)
    hub, engine, service = first_life(store, clock)
    start(service)
    derived = DerivedPoints(hub, clock, DerivedSettings(), alarms=engine)
    for i, (kw, on) in enumerate([(100.0, False), (100.0, True), (100.0, False), (100.0, True)]):
        hub.publish_many([Sample("plant/chiller-1/power", kw, "kW", T0 + 60 * i),
                          Sample("plant/chiller-1/compressor", on, "", T0 + 60 * i)])
    energy = point_of(hub, "plant/chiller-1/energy_kwh").value
    assert isinstance(energy, float) and energy == pytest.approx(5.0)  # 100 kW for 3 minutes
    assert point_of(hub, "plant/chiller-1/compressor_starts").value == 2
    derived.close()
    clock.advance(0.25)
    stop(service)

    store.open()
    hub2, engine2, _ = first_life(store, clock)
    derived2 = DerivedPoints(hub2, clock, DerivedSettings(), alarms=engine2)
    hub2.publish_many([Sample("plant/chiller-1/power", 100.0, "kW", T0 + 240),
                       Sample("plant/chiller-1/compressor", False, "", T0 + 240)])
    hub2.publish_many([Sample("plant/chiller-1/compressor", True, "", T0 + 250)])
    assert point_of(hub2, "plant/chiller-1/energy_kwh").value == pytest.approx(energy + 100.0 / 60)
    assert point_of(hub2, "plant/site/energy_kwh").value == pytest.approx(energy + 100.0 / 60)
    assert point_of(hub2, "plant/chiller-1/compressor_starts").value == 3
    assert point_of(hub2, "plant/chiller-1/compressor_starts").status == "ok"
    derived2.close()


# -- the options that choose a store ------------------------------------------------


@pytest.mark.parametrize("text", ["memory", "sqlite:x.db", "sqlite:///tmp/x.db", "postgresql://u@h/db", "postgres://h"])
def test_store_urls_that_are_fine(text):
    assert check_store_url(text) is None


@pytest.mark.parametrize("text", ["", "sqlite:", "mysql://x", "x.db", "SQLITE:x"])
def test_store_urls_that_are_not(text):
    assert check_store_url(text) is not None
    with pytest.raises(ValueError):
        make_store(text)


def test_the_store_option_opens_it_or_is_a_one_line_usage_error(tmp_path):
    from hvac_push.ops.tap import Options

    options = Options()
    options.parseOptions(["--store", f"sqlite:{tmp_path}/ok.db"])
    assert isinstance(options["store-backend"], SqliteStore)
    options["store-backend"].close()
    for bad, reason in ((f"sqlite:{tmp_path}/no/such/dir.db", "no folder"), ("mysql://h/db", "unknown store")):
        with pytest.raises(usage.UsageError) as caught:
            Options().parseOptions(["--store", bad])
        assert str(caught.value).startswith("--store: ") and reason in str(caught.value)
        assert "\n" not in str(caught.value)
    plain = Options()
    plain.parseOptions([])
    assert plain["store-backend"] is None  # outside twistd (embedding, tests): memory


def test_under_twistd_the_default_store_is_sqlite_in_the_working_folder(tmp_path, monkeypatch):
    from hvac_push.ops.tap import Options

    monkeypatch.chdir(tmp_path)
    options = Options()
    from twisted.scripts.twistd import ServerOptions

    twistd = ServerOptions()
    twistd["nodaemon"], twistd["logger"] = True, None
    options.parent = twistd
    options.parseOptions([])
    try:
        assert isinstance(options["store-backend"], SqliteStore)
        assert (tmp_path / "hvac-push.db").exists()
    finally:
        options["store-backend"].close()


def test_the_plant_file_store_key_is_checked_and_the_option_wins(tmp_path):
    from hvac_push.ops.plant_file import ConfigError, parse_config
    from hvac_push.ops.tap import Options

    assert parse_config('store = "memory"\n').store == "memory"
    assert parse_config("").store is None
    with pytest.raises(ConfigError) as caught:
        parse_config('store = "mysql://x"\n', "p.toml")
    assert caught.value.errors == ["p.toml: store: unknown store 'mysql://x': expected 'sqlite:PATH', "
                                   "'postgresql://...' or 'memory'"]
    with pytest.raises(ConfigError) as caught:
        parse_config('stor = "memory"\n', "p.toml")
    assert caught.value.errors == ["p.toml: stor: unknown key (did you mean 'store'?)"]
    plant = tmp_path / "plant.toml"
    plant.write_text(f'store = "sqlite:{tmp_path}/from-file.db"\n[simulator]\nunits = 1\n')
    options = Options()
    options.parseOptions(["--config", str(plant)])
    assert options["store-backend"].path == f"{tmp_path}/from-file.db"
    options["store-backend"].close()
    options = Options()
    options.parseOptions(["--config", str(plant), "--store", "memory"])
    assert options["store-backend"] is None
    plant.write_text(f'store = "sqlite:{tmp_path}/no/such/folder.db"\n[simulator]\nunits = 1\n')
    with pytest.raises(usage.UsageError, match=f"^{plant}: store: sqlite:"):
        Options().parseOptions(["--config", str(plant)])


def test_an_ack_may_carry_a_comment():
    from hvac_push.transport import wire

    assert wire.parse_client_message('{"type":"ack","alarm":"a:high"}') == wire.Ack("a:high", "")
    assert wire.parse_client_message('{"type":"ack","alarm":"a:high","comment":"ok"}') == wire.Ack("a:high", "ok")
    for bad in ('{"type":"ack","alarm":"a","comment":5}', '{"type":"ack","alarm":"a","comment":"' + "x" * 1001 + '"}'):
        with pytest.raises(wire.WireError, match="comment"):
            wire.parse_client_message(bad)


def test_retention_is_three_durations():
    from hvac_push.ops.tap import Options
    from hvac_push.store.url import parse_retention

    assert parse_retention("7d, 90d, 5y") == Retention(7 * 86400, 90 * 86400, 5 * 365 * 86400)
    for bad in ("7d,90d", "7,90d,5y", "7d,0d,5y", "7d,90d,5x"):
        with pytest.raises(ValueError):
            parse_retention(bad)
    options = Options()
    options.parseOptions(["--store-retention", "1d,30d,2y"])
    assert options["store-retention"] == Retention(86400, 30 * 86400, 2 * 365 * 86400)
    with pytest.raises(usage.UsageError, match="^--store-retention: bad duration '0d'"):
        Options().parseOptions(["--store-retention", "1d,0d,2y"])


def test_a_batch_that_fails_for_another_reason_than_the_database_is_dropped_not_retried_forever(tmp_path):
    class Broken(SqliteStore):
        def write(self, samples: Sequence[Point], journal: Sequence[JournalEntry]) -> None:
            if any(p.point_id == "plant/bad/point" for p in samples):
                raise TypeError("a bug")
            super().write(samples, journal)

    store = Broken(str(tmp_path / "b.db"))
    store.open()
    writer = StoreWriter(store)
    writer.start()
    try:
        writer.add_samples([point("plant/bad/point", 1.0, T0)])
        assert writer.wait_idle(10)
        writer.add_samples([point(P, 2.0, T0)])
        assert writer.wait_idle(10)
        assert writer.stats.samples_dropped == 1 and store.raw(P, 0, 2e9, 10) == [(T0, 2.0)]
    finally:
        writer.close()
        writer.join(10)
        store.close()
