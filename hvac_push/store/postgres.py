"""PostgreSQL through psycopg 3, for sites that already run one (or want the data off the box)."""

from __future__ import annotations

from typing import Any

from hvac_push.store.sql import SqlStore


def _redacted(url: str) -> str:
    """C{url} without its password, for logs and errors."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


class PostgresStore(SqlStore):
    """A L{hvac_push.store.interface.Store} in a PostgreSQL database named by a C{postgresql://} URL."""

    least = "LEAST"
    greatest = "GREATEST"
    placeholder = "%s"

    def __init__(self, url: str, *, connect_timeout: float = 5.0):
        super().__init__()
        import psycopg

        self.driver_errors = (psycopg.Error,)
        self.url = url
        self.description = _redacted(url)
        self.connect_timeout = connect_timeout

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, connect_timeout=max(1, int(self.connect_timeout)))

    def _usable(self, conn: Any) -> bool:
        return not conn.closed and not conn.broken

    def schema(self) -> list[str]:
        rollup = (
            "(series INTEGER NOT NULL, bucket BIGINT NOT NULL, vmin DOUBLE PRECISION, vmax DOUBLE PRECISION, "
            "vsum DOUBLE PRECISION, vcount BIGINT, vlast DOUBLE PRECISION, last_ts DOUBLE PRECISION, "
            "PRIMARY KEY (series, bucket))"
        )
        return [
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
            "CREATE TABLE IF NOT EXISTS series (id SERIAL PRIMARY KEY, point TEXT NOT NULL UNIQUE)",
            "CREATE TABLE IF NOT EXISTS samples (series INTEGER NOT NULL, ts DOUBLE PRECISION NOT NULL, "
            "num DOUBLE PRECISION, txt TEXT, PRIMARY KEY (series, ts))",
            f"CREATE TABLE IF NOT EXISTS rollup_minute {rollup}",
            f"CREATE TABLE IF NOT EXISTS rollup_hour {rollup}",
            "CREATE TABLE IF NOT EXISTS last_values (point TEXT PRIMARY KEY, num DOUBLE PRECISION, txt TEXT, "
            "unit TEXT, ts DOUBLE PRECISION, status TEXT)",
            "CREATE TABLE IF NOT EXISTS alarm_journal (id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, "
            "seq BIGINT, alarm TEXT, point TEXT, kind TEXT, state TEXT, severity TEXT, num DOUBLE PRECISION, "
            "txt TEXT, alarm_limit DOUBLE PRECISION, message TEXT, acked_by TEXT, comment TEXT, "
            "shelved_until DOUBLE PRECISION)",
            "CREATE INDEX IF NOT EXISTS alarm_journal_ts ON alarm_journal (ts)",
            "CREATE INDEX IF NOT EXISTS alarm_journal_alarm ON alarm_journal (alarm, id)",
        ]

    def add_missing_columns(self, cursor: Any) -> None:
        cursor.execute("ALTER TABLE alarm_journal ADD COLUMN IF NOT EXISTS shelved_until DOUBLE PRECISION")
