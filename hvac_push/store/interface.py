"""The one seam between hvac-push and a database: the L{Store} protocol and the rows it carries.

A store is synchronous and thread-confined by design: L{hvac_push.store.recorder}
calls its write methods from one writer thread and its read methods from a
small thread pool, never from the reactor thread. Each implementation keeps
one connection per thread. Values cross threads as frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

from hvac_push.core.points import Point, Value

#: What a history query may aggregate a bucket into.
AGGREGATES = ("mean", "min", "max", "last")
#: Rollup tables by their bucket width in seconds.
MINUTE = 60
HOUR = 3600


class StoreError(Exception):
    """The database cannot be opened or used; the message is one line, safe to log."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each kind of row is kept, in seconds (defaults: 7 days, 1 year, 5 years, and 5 years of alarm journal)."""

    raw: float = 7 * 86400.0
    minute: float = 365 * 86400.0
    hour: float = 5 * 365 * 86400.0
    #: Alarm transitions older than this go, except the latest of each listed alarm (it is the alarm list).
    journal: float = 5 * 365 * 86400.0

    def __post_init__(self) -> None:
        if not (0 < self.raw and 0 < self.minute and 0 < self.hour and 0 < self.journal):
            raise ValueError("retention periods must be positive")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One alarm transition as the journal keeps it; C{by}/C{comment} only on acknowledgements."""

    ts: float
    seq: int
    alarm: str
    point: str
    kind: str
    state: str
    severity: str
    value: Value | None
    limit: float | None
    message: str
    by: str | None = None
    comment: str | None = None
    #: When a C{shelved} alarm comes back (epoch seconds), so a restart keeps it hidden until then.
    shelved_until: float | None = None


@dataclass(frozen=True, slots=True)
class Bucket:
    """One rollup bucket of one point: its start and the aggregates of its samples."""

    start: float
    min: float
    max: float
    sum: float
    count: int
    last: float
    last_ts: float


class Store(Protocol):
    """A database that keeps samples, rollups, the alarm journal and last values.

    Every method may raise L{StoreError}; none may be called on the reactor thread.
    """

    #: Where the data lives, for logs and errors (never a password).
    description: str

    def open(self) -> None:
        """Connect and create the schema if needed; L{StoreError} when impossible."""

    def close(self) -> None:
        """Close every connection this store opened (any thread)."""

    # -- writing (the writer thread) --------------------------------------------

    def write(self, samples: Sequence[Point], journal: Sequence[JournalEntry]) -> None:
        """In one transaction: the samples with their rollups, the latest per point as last values, the journal."""

    def expire(self, now: float, retention: Retention) -> int:
        """Delete rows older than their retention; return how many rows went."""

    # -- reading (the reader pool, and once at start-up) ------------------------

    def point_ids(self) -> list[str]:
        """Every point that has samples, sorted."""

    def raw(self, point_id: str, start: float, end: float, limit: int) -> list[tuple[float, Value]]:
        """Samples with C{start <= ts <= end}, oldest first, at most C{limit}."""

    def buckets(self, point_id: str, width: int, start: float, end: float) -> list[Bucket]:
        """Rollup buckets of C{width} (L{MINUTE} or L{HOUR}) that start within C{[start, end]}, oldest first."""

    def journal(self, start: float, end: float, limit: int) -> list[JournalEntry]:
        """Alarm transitions with C{start <= ts <= end}, in the order they happened."""

    def last_values(self) -> list[Point]:
        """The newest stored sample of every point (version 0: the hub gives its own)."""

    def current_alarms(self) -> list[JournalEntry]:
        """The latest transition of every alarm whose latest state is not C{normal}."""

    def alarm_starts(self) -> dict[str, float]:
        """When each alarm's current episode began: its first transition after its last C{normal}."""
        ...

    def last_seq(self) -> int:
        """The highest alarm C{seq} in the journal (0 when empty)."""


def decode_value(num: float | None, txt: str | None) -> Value | None:
    """A value from its two columns.

    Strings sit in C{txt} alone; numbers in C{num}, with C{txt} marking the
    type: L{None} for a float, C{"i"} for an integer, C{"b"} for a boolean.
    """
    if num is None:
        return txt
    if txt is None:
        return float(num)
    if txt == "b":
        return bool(num)
    return int(num)


def encode_value(value: Value | None) -> tuple[float | None, str | None]:
    """The two columns that hold C{value} (see L{decode_value})."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return (1.0 if value else 0.0), "b"
    if isinstance(value, int):
        return float(value), "i"
    if isinstance(value, float):
        return value, None
    return None, value


def numeric(value: Value | None) -> float | None:
    """The number a rollup aggregates (booleans as 0/1), or L{None} for strings and missing values."""
    if value is None or isinstance(value, str):
        return None
    return float(value)


def unique_latest(points: Iterable[Point]) -> dict[str, Point]:
    """The newest point per id (by ts, then by arrival)."""
    latest: dict[str, Point] = {}
    for point in points:
        known = latest.get(point.point_id)
        if known is None or point.ts >= known.ts:
            latest[point.point_id] = point
    return latest
