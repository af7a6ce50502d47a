"""Small pieces shared by the equipment sources (MQTT, Modbus): status marks, quiet logs, backoff."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any, Callable, Iterable, Sequence

from twisted.logger import Logger

from hvac_push.core.points import Sample, Status

log = Logger(namespace="hvac_push.producers")


class PointStates:
    """The last sample a source handed over per point, so it can re-mark their status.

    L{mark} sets a status without a new value. When the publish callable has a
    C{publish_status} method (a L{hvac_push.core.publisher.Publisher} does) it
    is used; otherwise the last sample of each point is handed over again with
    the new status and its original C{ts}, which the hub takes as a status
    change. Either way the last value stays visible. One thread only.
    """

    def __init__(self, max_points: int = 100_000):
        self.max_points = max_points
        self._last: dict[str, Sample] = {}

    def remember(self, samples: Iterable[Sample]) -> None:
        last = self._last
        for sample in samples:
            if sample.point_id in last or len(last) < self.max_points:
                last[sample.point_id] = sample

    def known(self) -> set[str]:
        return set(self._last)

    def mark(self, publish: Callable[[Sequence[Sample]], None], point_ids: Iterable[str], status: Status) -> None:
        ids = sorted(set(point_ids))
        if not ids:
            return
        publish_status: Any = getattr(publish, "publish_status", None)
        changed = []
        for point_id in ids:
            sample = self._last.get(point_id)
            if sample is not None and sample.status != status and sample.ts is not None:
                self._last[point_id] = sample = replace(sample, status=status)
                changed.append(sample)
        if publish_status is not None:
            publish_status(ids, status)
        elif changed:
            publish(changed)


class QuietLog:
    """Lets a message through at most once per key per C{period} seconds (thread-safe).

    Keys are bounded: past C{max_keys} the oldest are forgotten.
    """

    def __init__(self, period: float = 60.0, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.period = period
        self.max_keys = max_keys
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                return False
            self._last.pop(key, None)
            self._last[key] = now
            while len(self._last) > self.max_keys:
                del self._last[next(iter(self._last))]
            return True


class Backoff:
    """Exponential delays: C{initial}, doubling up to C{maximum}; C{reset} after a success."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0):
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial!r}, {maximum!r}")
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


__all__ = ["Backoff", "PointStates", "QuietLog", "log"]
