"""History queries over a L{Store}: raw samples for short ranges, rollups otherwise.

Runs on a reader thread (L{hvac_push.store.recorder.StoreService.read}).
"""

from __future__ import annotations

import math
from typing import Any

from hvac_push.core.points import Value
from hvac_push.store.interface import HOUR, MINUTE, Bucket, Store, numeric

#: Without a step, a range up to this long is answered with raw samples.
RAW_RANGE = 3600.0
#: At most this many raw samples per point in one answer.
MAX_RAW = 100_000
#: At most this many values per point when a step is given.
MAX_STEPS = 20_000
#: Steps chosen when a long range comes without one: the smallest giving at most C{AUTO_POINTS} values.
AUTO_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
AUTO_POINTS = 1500


class QueryError(ValueError):
    """A query that cannot be answered as asked; the message says why (HTTP 400)."""


def choose_step(start: float, end: float, step: float | None) -> float | None:
    """The step a query uses: as given (checked), L{None} (raw) for a short range, else an automatic one."""
    span = end - start
    if step is None:
        if span <= RAW_RANGE:
            return None
        for candidate in AUTO_STEPS:
            if span / candidate <= AUTO_POINTS:
                return float(candidate)
        return float(AUTO_STEPS[-1])
    if span / step > MAX_STEPS:
        raise QueryError(f"step {step:g} s over {span:g} s gives more than {MAX_STEPS} values: use a larger step")
    return step


def series(store: Store, point_id: str, start: float, end: float, step: float | None, agg: str) -> list[list[Any]]:
    """C{[[ts, value], ...]} of one point: raw when C{step} is None, else one value per step."""
    if step is None:
        return [[ts, value] for ts, value in store.raw(point_id, start, end, MAX_RAW)]
    if step < MINUTE or step % MINUTE:
        return _group_raw(store.raw(point_id, start, end, MAX_RAW), start, step, agg)
    width = HOUR if step % HOUR == 0 else MINUTE
    return _group_buckets(store.buckets(point_id, width, start, end), start, step, agg)


def _slot(ts: float, start: float, step: float) -> float:
    """The start of the step C{ts} falls in; steps are aligned to the epoch, as rollups are."""
    return math.floor(ts / step) * step


def _group_raw(samples: list[tuple[float, Value]], start: float, step: float, agg: str) -> list[list[Any]]:
    out: list[list[Any]] = []
    group: list[tuple[float, Value]] = []
    current: float | None = None
    for ts, value in samples:
        slot = _slot(ts, start, step)
        if current is not None and slot != current:
            out.append([current, _aggregate_values(group, agg)])
            group = []
        current = slot
        group.append((ts, value))
    if current is not None and group:
        out.append([current, _aggregate_values(group, agg)])
    return out


def _aggregate_values(group: list[tuple[float, Value]], agg: str) -> Value:
    if agg == "last":
        return group[-1][1]
    numbers = [x for x in (numeric(v) for _, v in group) if x is not None]
    if not numbers:
        return group[-1][1]  # strings have only a last value
    if agg == "min":
        return min(numbers)
    if agg == "max":
        return max(numbers)
    return sum(numbers) / len(numbers)


def _group_buckets(buckets: list[Bucket], start: float, step: float, agg: str) -> list[list[Any]]:
    out: list[list[Any]] = []
    group: list[Bucket] = []
    current: float | None = None
    for bucket in buckets:
        slot = _slot(bucket.start, start, step)
        if current is not None and slot != current:
            out.append([current, _aggregate_buckets(group, agg)])
            group = []
        current = slot
        group.append(bucket)
    if current is not None and group:
        out.append([current, _aggregate_buckets(group, agg)])
    return out


def _aggregate_buckets(group: list[Bucket], agg: str) -> float:
    if agg == "min":
        return min(b.min for b in group)
    if agg == "max":
        return max(b.max for b in group)
    if agg == "last":
        return max(group, key=lambda b: b.last_ts).last
    count = sum(b.count for b in group)
    return sum(b.sum for b in group) / count if count else math.nan
