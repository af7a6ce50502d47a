"""The embedded default: one SQLite file, in WAL mode, through the standard library."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from hvac_push.store.interface import StoreError
from hvac_push.store.sql import SqlStore

#: SQLite's own ceiling for C{max_page_count}.
_NO_PAGE_LIMIT = 4294967294


class _Connection(sqlite3.Connection):
    """A connection that remembers the page limit set on it."""

    page_limit: int | None = None


class SqliteStore(SqlStore):
    """A L{hvac_push.store.interface.Store} in the file C{path}.

    WAL mode lets the reader pool query while the writer thread commits;
    C{synchronous=NORMAL} keeps every commit across a crash of the process
    (not of the machine) at a fraction of the cost of C{FULL}.
    """

    driver_errors = (sqlite3.Error,)

    def __init__(self, path: str, *, page_limit: int | None = None):
        super().__init__()
        self.path = path
        self.description = f"sqlite:{path}"
        #: Cap on the file's size in pages (C{PRAGMA max_page_count}); None: no cap beyond the disk's.
        self.page_limit = page_limit

    def connect(self) -> Any:
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise sqlite3.OperationalError(f"no folder {folder}")
        conn = sqlite3.connect(
            self.path, timeout=10.0, check_same_thread=False, isolation_level="DEFERRED", factory=_Connection
        )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _conn(self) -> Any:
        conn = super()._conn()
        if conn.page_limit != self.page_limit:
            try:
                conn.execute(f"PRAGMA max_page_count = {int(self.page_limit or _NO_PAGE_LIMIT)}")
            except sqlite3.Error as e:
                raise StoreError(f"{self.description}: {e}") from None
            conn.page_limit = self.page_limit
        return conn

    def schema(self) -> list[str]:
        rollup = (
            "(series INTEGER NOT NULL, bucket INTEGER NOT NULL, vmin REAL, vmax REAL, vsum REAL, "
            "vcount INTEGER, vlast REAL, last_ts REAL, PRIMARY KEY (series, bucket)) WITHOUT ROWID"
        )
        return [
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
            "CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, point TEXT NOT NULL UNIQUE)",
            "CREATE TABLE IF NOT EXISTS samples (series INTEGER NOT NULL, ts REAL NOT NULL, num REAL, txt TEXT, "
            "PRIMARY KEY (series, ts)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS rollup_minute {rollup}",
            f"CREATE TABLE IF NOT EXISTS rollup_hour {rollup}",
            "CREATE TABLE IF NOT EXISTS last_values (point TEXT PRIMARY KEY, num REAL, txt TEXT, unit TEXT, "
            "ts REAL, status TEXT)",
            "CREATE TABLE IF NOT EXISTS alarm_journal (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
            "seq INTEGER, alarm TEXT, point TEXT, kind TEXT, state TEXT, severity TEXT, num REAL, txt TEXT, "
            "alarm_limit REAL, message TEXT, acked_by TEXT, comment TEXT, shelved_until REAL)",
            "CREATE INDEX IF NOT EXISTS alarm_journal_ts ON alarm_journal (ts)",
            "CREATE INDEX IF NOT EXISTS alarm_journal_alarm ON alarm_journal (alarm, id)",
        ]

    def add_missing_columns(self, cursor: Any) -> None:
        cursor.execute("PRAGMA table_info(alarm_journal)")
        if "shelved_until" not in {row[1] for row in cursor.fetchall()}:
            cursor.execute("ALTER TABLE alarm_journal ADD COLUMN shelved_until REAL")

    def backup(self, target: str) -> None:
        """Copy the database to C{target} with SQLite's online backup (safe while the server writes)."""
        destination = sqlite3.connect(target)
        try:
            self._conn().backup(destination)
        finally:
            destination.close()
