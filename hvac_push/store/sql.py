"""What the SQLite and PostgreSQL stores share: the schema's shape, rollups, and every query.

Each sample row holds an integer series key, not the point id, so a sample
costs a few dozen bytes. Values sit in two columns (L{encode_value}). Rollups
are kept in Python per batch and merged into their buckets with one upsert
each, so a bucket is never recomputed from raw rows.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Iterator, Sequence

from twisted.logger import Logger

from hvac_push.core.points import Point
from hvac_push.store.interface import (
    HOUR,
    MINUTE,
    Bucket,
    JournalEntry,
    Retention,
    StoreError,
    decode_value,
    encode_value,
    numeric,
    unique_latest,
)

SCHEMA_VERSION = "1"
ROLLUP_TABLES = {MINUTE: "rollup_minute", HOUR: "rollup_hour"}
_JOURNAL_COLUMNS = (
    "ts, seq, alarm, point, kind, state, severity, num, txt, alarm_limit, message, acked_by, comment, shelved_until"
)


class _Accumulator:
    """The aggregates of one bucket within one batch."""

    __slots__ = ("min", "max", "sum", "count", "last", "last_ts")

    def __init__(self, ts: float, x: float):
        self.min = self.max = self.sum = self.last = x
        self.count = 1
        self.last_ts = ts

    def add(self, ts: float, x: float) -> None:
        self.min = min(self.min, x)
        self.max = max(self.max, x)
        self.sum += x
        self.count += 1
        if ts >= self.last_ts:
            self.last, self.last_ts = x, ts


def rollup(points: Sequence[tuple[int, Point]], width: int) -> dict[tuple[int, int], _Accumulator]:
    """Per (series, bucket start) aggregates of the numeric values among C{points}."""
    buckets: dict[tuple[int, int], _Accumulator] = {}
    for series, point in points:
        x = numeric(point.value)
        if x is None:
            continue
        key = (series, int(point.ts // width) * width)
        found = buckets.get(key)
        if found is None:
            buckets[key] = _Accumulator(point.ts, x)
        else:
            found.add(point.ts, x)
    return buckets


class SqlStore:
    """A L{hvac_push.store.interface.Store} over a DB-API connection; subclasses supply the dialect."""

    log = Logger()
    description = "sql"
    #: The errors of the driver that mean "the database cannot do this now".
    driver_errors: tuple[type[BaseException], ...] = ()
    #: Scalar two-argument minimum and maximum.
    least = "min"
    greatest = "max"
    placeholder = "?"

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        #: Point id -> series key; filled and used by the writer thread only.
        self._series: dict[str, int] = {}

    # -- to be provided by a dialect ---------------------------------------------

    def connect(self) -> Any:
        raise NotImplementedError

    def schema(self) -> list[str]:
        raise NotImplementedError

    def add_missing_columns(self, cursor: Any) -> None:
        """Columns added since a file or database was created (schema 1 stays readable by adding them)."""
        raise NotImplementedError

    # -- connections --------------------------------------------------------------

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn not in self._connections:
            conn = None  # closed by close() since this thread last used it
        if conn is None:
            try:
                conn = self.connect()
            except self.driver_errors as e:
                raise StoreError(f"{self.description}: {_one_line(e)}") from None
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        """Forget this thread's connection after a failure, so the next call reconnects."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            try:
                conn.close()
            except Exception:
                pass

    def open(self) -> None:
        def create(cursor: Any) -> None:
            for statement in self.schema():
                cursor.execute(statement)
            self.add_missing_columns(cursor)
            cursor.execute(self._sql("SELECT value FROM meta WHERE key = 'schema'"))
            row = cursor.fetchone()
            if row is None:
                cursor.execute(self._sql("INSERT INTO meta (key, value) VALUES ('schema', ?)"), (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise StoreError(f"{self.description}: schema version {row[0]}, this server knows {SCHEMA_VERSION}")

        self._transaction(create)

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except Exception:
                pass

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _transaction(self, work: Any) -> Any:
        """Run C{work(cursor)} in one transaction; driver errors become L{StoreError}."""
        conn = self._conn()
        try:
            cursor = conn.cursor()
            try:
                result = work(cursor)
            finally:
                cursor.close()
            conn.commit()
            return result
        except self.driver_errors as e:
            try:
                conn.rollback()
            except Exception:
                self._drop_connection()
            else:
                if not self._usable(conn):
                    self._drop_connection()
            raise StoreError(f"{self.description}: {_one_line(e)}") from None
        except BaseException:
            try:
                conn.rollback()
            except Exception:
                self._drop_connection()
            raise

    def _usable(self, conn: Any) -> bool:
        return True

    def _query(self, text: str, args: Sequence[Any] = ()) -> list[Any]:
        def work(cursor: Any) -> list[Any]:
            cursor.execute(self._sql(text), tuple(args))
            return list(cursor.fetchall())

        try:
            return list(self._transaction(work))
        except StoreError:
            if getattr(self._local, "conn", None) is not None:
                raise
            # The connection broke (a restarted server): a read is safe to try once more on a new one.
            return list(self._transaction(work))

    # -- writing ------------------------------------------------------------------

    def write(self, samples: Sequence[Point], journal: Sequence[JournalEntry]) -> None:
        try:
            self._transaction(lambda cursor: self._write(cursor, samples, journal))
        except BaseException:
            self._series.clear()  # keys made in the rolled-back transaction are gone
            raise

    def _series_key(self, cursor: Any, point_id: str) -> int:
        key = self._series.get(point_id)
        if key is None:
            cursor.execute(self._sql("INSERT INTO series (point) VALUES (?) ON CONFLICT (point) DO NOTHING"), (point_id,))
            cursor.execute(self._sql("SELECT id FROM series WHERE point = ?"), (point_id,))
            key = self._series[point_id] = int(cursor.fetchone()[0])
        return key

    def _write(self, cursor: Any, samples: Sequence[Point], journal: Sequence[JournalEntry]) -> None:
        keyed = [(self._series_key(cursor, p.point_id), p) for p in samples]
        if keyed:
            cursor.executemany(
                self._sql(
                    "INSERT INTO samples (series, ts, num, txt) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (series, ts) DO UPDATE SET num = excluded.num, txt = excluded.txt"
                ),
                [(key, p.ts, *encode_value(p.value)) for key, p in keyed],
            )
            for width, table in ROLLUP_TABLES.items():
                buckets = rollup(keyed, width)
                cursor.executemany(
                    self._sql(
                        f"INSERT INTO {table} (series, bucket, vmin, vmax, vsum, vcount, vlast, last_ts) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (series, bucket) DO UPDATE SET "
                        f"vmin = {self.least}({table}.vmin, excluded.vmin), "
                        f"vmax = {self.greatest}({table}.vmax, excluded.vmax), "
                        f"vsum = {table}.vsum + excluded.vsum, vcount = {table}.vcount + excluded.vcount, "
                        f"vlast = CASE WHEN excluded.last_ts >= {table}.last_ts THEN excluded.vlast ELSE {table}.vlast END, "
                        f"last_ts = {self.greatest}({table}.last_ts, excluded.last_ts)"
                    ),
                    [(s, b, a.min, a.max, a.sum, a.count, a.last, a.last_ts) for (s, b), a in buckets.items()],
                )
            cursor.executemany(
                self._sql(
                    "INSERT INTO last_values (point, num, txt, unit, ts, status) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (point) DO UPDATE SET num = excluded.num, txt = excluded.txt, "
                    "unit = excluded.unit, ts = excluded.ts, status = excluded.status WHERE excluded.ts >= last_values.ts"
                ),
                [(p.point_id, *encode_value(p.value), p.unit, p.ts, p.status) for p in unique_latest(samples).values()],
            )
        if journal:
            cursor.executemany(
                self._sql(f"INSERT INTO alarm_journal ({_JOURNAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                [
                    (e.ts, e.seq, e.alarm, e.point, e.kind, e.state, e.severity, *encode_value(e.value),
                     e.limit, e.message, e.by, e.comment, e.shelved_until)
                    for e in journal
                ],
            )

    def expire(self, now: float, retention: Retention) -> int:
        def work(cursor: Any) -> int:
            cursor.execute("SELECT id FROM series")
            keys = [row[0] for row in cursor.fetchall()]
            removed = 0
            for table, column, age in (
                ("samples", "ts", retention.raw),
                ("rollup_minute", "bucket", retention.minute),
                ("rollup_hour", "bucket", retention.hour),
            ):
                for key in keys:
                    cursor.execute(self._sql(f"DELETE FROM {table} WHERE series = ? AND {column} < ?"), (key, now - age))
                    removed += max(cursor.rowcount, 0)
            # The journal: old transitions go, but never the latest of a listed alarm (the alarm list
            # restored at start-up) nor the one holding the highest seq (where the next seq continues).
            cursor.execute(
                self._sql(
                    "DELETE FROM alarm_journal WHERE ts < ? AND id NOT IN ("
                    "SELECT id FROM alarm_journal WHERE state <> 'normal' AND id IN "
                    "(SELECT MAX(id) FROM alarm_journal GROUP BY alarm)) "
                    "AND id <> (SELECT MAX(id) FROM alarm_journal)"
                ),
                (now - retention.journal,),
            )
            removed += max(int(cursor.rowcount), 0)
            return removed

        return int(self._transaction(work))

    # -- reading ------------------------------------------------------------------

    def point_ids(self) -> list[str]:
        return [row[0] for row in self._query("SELECT point FROM series ORDER BY point")]

    def raw(self, point_id: str, start: float, end: float, limit: int) -> list[tuple[float, Any]]:
        rows = self._query(
            "SELECT s.ts, s.num, s.txt FROM samples s JOIN series p ON p.id = s.series "
            "WHERE p.point = ? AND s.ts >= ? AND s.ts <= ? ORDER BY s.ts LIMIT ?",
            (point_id, start, end, limit),
        )
        return [(ts, decode_value(num, txt)) for ts, num, txt in rows]

    def buckets(self, point_id: str, width: int, start: float, end: float) -> list[Bucket]:
        table = ROLLUP_TABLES[width]
        rows = self._query(
            f"SELECT r.bucket, r.vmin, r.vmax, r.vsum, r.vcount, r.vlast, r.last_ts FROM {table} r "
            "JOIN series p ON p.id = r.series WHERE p.point = ? AND r.bucket >= ? AND r.bucket <= ? ORDER BY r.bucket",
            (point_id, math.floor(start / width) * width, end),
        )
        return [Bucket(float(b), vmin, vmax, vsum, int(n), vlast, last_ts) for b, vmin, vmax, vsum, n, vlast, last_ts in rows]

    def journal(self, start: float, end: float, limit: int) -> list[JournalEntry]:
        rows = self._query(
            f"SELECT {_JOURNAL_COLUMNS} FROM alarm_journal WHERE ts >= ? AND ts <= ? ORDER BY id LIMIT ?",
            (start, end, limit),
        )
        return list(_journal_entries(rows))

    def current_alarms(self) -> list[JournalEntry]:
        rows = self._query(
            f"SELECT {_JOURNAL_COLUMNS} FROM alarm_journal WHERE id IN "
            "(SELECT MAX(id) FROM alarm_journal GROUP BY alarm) AND state <> 'normal' ORDER BY id"
        )
        return list(_journal_entries(rows))

    def alarm_starts(self) -> dict[str, float]:
        rows = self._query(
            "SELECT j.alarm, MIN(j.ts) FROM alarm_journal j WHERE j.id > COALESCE("
            "(SELECT MAX(n.id) FROM alarm_journal n WHERE n.alarm = j.alarm AND n.state = 'normal'), 0) "
            "GROUP BY j.alarm"
        )
        return {alarm: float(ts) for alarm, ts in rows}

    def last_seq(self) -> int:
        rows = self._query("SELECT MAX(seq) FROM alarm_journal")
        return int(rows[0][0] or 0) if rows else 0

    def last_values(self) -> list[Point]:
        rows = self._query("SELECT point, num, txt, unit, ts, status FROM last_values ORDER BY ts")
        points = []
        for point_id, num, txt, unit, ts, status in rows:
            value = decode_value(num, txt)
            if value is not None:
                points.append(Point(point_id, value, unit, float(ts), status, 0))
        return points


def _journal_entries(rows: Sequence[Any]) -> Iterator[JournalEntry]:
    for ts, seq, alarm, point, kind, state, severity, num, txt, limit, message, by, comment, until in rows:
        yield JournalEntry(float(ts), int(seq), alarm, point, kind, state, severity, decode_value(num, txt),
                           limit, message, by, comment, None if until is None else float(until))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__
