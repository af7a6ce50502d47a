"""Staleness: a point that stops reporting is marked C{stale}, the BAS rule of 3x its interval.

A declared point that never reports at all (status C{waiting}) is judged from
the time it was declared, so it turns C{stale} the same way.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from hvac_push.core.follow import HubFollower
from hvac_push.core.hub import Hub
from hvac_push.core.points import Point

STALE_FACTOR = 3.0
DEFAULT_EXPECTED_INTERVAL = 60.0


class StalenessWatcher:
    """Marks points stale after C{3 x expected_interval} seconds without a sample.

    Arrival time is measured on the reactor's clock, not from the sample's
    C{ts}, so a source with a skewed clock is judged by when data really came.
    A fresh sample brings the point back to C{ok} through the hub as usual.
    """

    def __init__(
        self,
        hub: Hub,
        clock: IReactorTime,
        default_interval: float = DEFAULT_EXPECTED_INTERVAL,
        check_every: float = 1.0,
    ):
        self.hub = hub
        self.clock = clock
        self.default_interval = default_interval
        self.check_every = check_every
        self._arrived: dict[str, tuple[float, float]] = {}
        self._follower = HubFollower(hub, self._seen)
        for point in hub.points():
            self._seen(point)
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    def _seen(self, point: Point) -> None:
        known = self._arrived.get(point.point_id)
        if known is not None and known[1] == point.ts:
            return  # a status change, not a new sample
        self._arrived[point.point_id] = (self.clock.seconds(), point.ts)

    def expected_interval(self, point_id: str) -> float:
        meta = self.hub.meta.get(point_id)
        if meta is not None and meta.expected_interval:
            return meta.expected_interval
        return self.default_interval

    def check(self) -> None:
        now = self.clock.seconds()
        stale = []
        for point_id, (arrived, _) in self._arrived.items():
            if now - arrived > STALE_FACTOR * self.expected_interval(point_id):
                point = self.hub.get(point_id)
                # A declared point still waiting for its first reading goes stale too.
                if point is not None and point.status in ("ok", "waiting"):
                    stale.append(point_id)
        if stale:
            self.hub.set_status(stale, "stale")

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.check_every, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
