"""A bounded ring of recent samples per point, so a chart can draw at once."""

from __future__ import annotations

from collections import deque
from typing import Iterable

from hvac_push.core.follow import HubFollower
from hvac_push.core.hub import Hub
from hvac_push.core.points import Point, Value

DEFAULT_WINDOW = 15 * 60.0
DEFAULT_MAX_SAMPLES = 2000


class History:
    """Keeps (ts, value) per point for C{window} seconds, at most C{max_samples} each.

    Both bounds hold at once: a fast point keeps its newest C{max_samples},
    a slow one everything within the window. Memory is bounded by
    points x max_samples whatever the rates.
    """

    def __init__(self, hub: Hub, window: float = DEFAULT_WINDOW, max_samples: int = DEFAULT_MAX_SAMPLES):
        self.window = window
        self.max_samples = max_samples
        self._rings: dict[str, deque[tuple[float, Value]]] = {}
        self._follower = HubFollower(hub, self.record)
        for point in hub.points():
            self.record(point)

    def record(self, point: Point) -> None:
        if point.value is None:
            return  # a declared point without a reading: nothing to draw
        ring = self._rings.get(point.point_id)
        if ring is None:
            ring = self._rings[point.point_id] = deque(maxlen=self.max_samples)
        elif ring and ring[-1][0] == point.ts:
            return  # a status change, not a new sample
        ring.append((point.ts, point.value))
        horizon = point.ts - self.window
        while ring and ring[0][0] < horizon:
            ring.popleft()

    def preload(self, point_id: str, samples: Iterable[tuple[float, Value]]) -> None:
        """Put older samples (from a store, at start-up) in front of what the ring holds, within both bounds."""
        ring = self._rings.get(point_id)
        known = list(ring) if ring else []
        first = known[0][0] if known else float("inf")
        merged = [s for s in samples if s[0] < first] + known
        if not merged:
            return
        horizon = merged[-1][0] - self.window
        self._rings[point_id] = deque((s for s in merged if s[0] >= horizon), maxlen=self.max_samples)

    def samples(self, point_id: str, since: float, now: float) -> list[tuple[float, Value]]:
        """Samples of C{point_id} with C{ts >= since}, never older than the window."""
        ring = self._rings.get(point_id)
        if not ring:
            return []
        floor = max(since, now - self.window)
        return [(ts, value) for ts, value in ring if ts >= floor]

    def __contains__(self, point_id: str) -> bool:
        return point_id in self._rings
