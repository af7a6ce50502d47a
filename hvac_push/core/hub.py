"""The hub: the current value of every point, with per-point and hub versions.

Reactor thread only. It knows nothing about sockets: delivery asks it "what
changed since version V?" and it answers from per-point versions, so the answer
is exact for any V without keeping a log.
"""

from __future__ import annotations

import secrets
import time
from typing import Callable, Iterable, Iterator

from twisted.logger import Logger

from hvac_push.core.points import (
    STATUSES,
    InvalidPoint,
    Point,
    PointMeta,
    Sample,
    Subscription,
    check_point_id,
    check_value,
    unit_of,
)

ChangeListener = Callable[[], None]
#: What a sample may say about itself: C{waiting} belongs to points without a value.
SAMPLE_STATUSES = tuple(s for s in STATUSES if s != "waiting")


def _check_unit(unit: object) -> None:
    if not isinstance(unit, str) or len(unit) > 32:
        raise InvalidPoint("unit must be a string of at most 32 characters")


def _version(point: Point) -> int:
    return point.version


class Hub:
    """Current points keyed by id, ordered by the version that last changed them."""

    log = Logger()

    def __init__(self, epoch: str | None = None, clock: Callable[[], float] = time.time):
        #: A random id for this hub's lifetime: a client that resumes against a
        #: different epoch knows its versions mean nothing here.
        self.epoch = epoch or secrets.token_hex(8)
        #: The version of the newest accepted change; it only ever increases.
        self.version = 0
        self._clock = clock
        # Insertion order == version order: a changed point is moved to the end.
        self._points: dict[str, Point] = {}
        #: Point ids by C{(site, unit)}: a subscription to a few units reads only theirs.
        self._units: dict[tuple[str, str], list[str]] = {}
        self._listeners: list[ChangeListener] = []
        #: Set while listeners run; writes made by a listener wait in C{_queued}
        #: and are applied once every listener has seen the current change.
        self._notifying = False
        self._queued: list[Callable[[], object]] = []
        self.rejected = 0
        #: Per-point configuration (display name, expected interval, alarm limits).
        self.meta: dict[str, PointMeta] = {}

    # -- writing ------------------------------------------------------------

    def publish(self, sample: Sample) -> Point | None:
        """Store one sample; return the stored point, or L{None} if refused.

        A sample older than the stored one for the same point is ignored, so
        late or replayed readings never overwrite newer state.
        """
        if self._notifying:
            self._queued.append(lambda: self.publish(sample))
            return None
        point = self._store(sample)
        if point is not None:
            self._notify()
        return point

    def publish_many(self, samples: Iterable[Sample]) -> int:
        """Store a batch and notify listeners once; return how many were stored.

        Called from inside a listener (a follower publishing what it derived),
        the batch is applied after the current notification and 0 is returned.
        """
        if self._notifying:
            batch = list(samples)
            self._queued.append(lambda: self.publish_many(batch))
            return 0
        stored = 0
        for sample in samples:
            if self._store(sample) is not None:
                stored += 1
        if stored:
            self._notify()
        return stored

    def _store(self, sample: Sample) -> Point | None:
        try:
            check_point_id(sample.point_id)
            value = check_value(sample.value)
            if sample.status not in STATUSES or sample.status == "waiting":
                raise InvalidPoint(f"status must be one of {', '.join(SAMPLE_STATUSES)}")
            _check_unit(sample.unit)
            ts = self._clock() if sample.ts is None else float(sample.ts)
        except (InvalidPoint, TypeError, ValueError) as e:
            self.rejected += 1
            if self.rejected <= 10 or self.rejected % 1000 == 0:
                self.log.warn(
                    "rejected sample for {point_id!r}: {why} ({count} rejected so far)",
                    point_id=getattr(sample, "point_id", None),
                    why=str(e),
                    count=self.rejected,
                )
            return None
        old = self._points.get(sample.point_id)
        if old is not None:
            # A declared point's ts is only when it was declared: any first reading is newer news.
            if ts < old.ts and old.value is not None:
                return None
            if (
                ts == old.ts
                and value == old.value
                and type(value) is type(old.value)
                and sample.unit == old.unit
                and sample.status == old.status
            ):
                return None
            del self._points[sample.point_id]
        else:
            self._units.setdefault(unit_of(sample.point_id), []).append(sample.point_id)
        self.version += 1
        point = Point(sample.point_id, value, sample.unit, ts, sample.status, self.version)
        self._points[sample.point_id] = point
        return point

    def set_status(self, point_ids: Iterable[str], status: str) -> int:
        """Change the status of known points, keeping value and ts; return how many changed.

        For sources that lose their device or broker: the last value stays
        visible, marked as no longer trustworthy. A point without a value is
        never C{ok}: asking for it makes it C{waiting} (the source is fine,
        the first reading has not come).
        """
        if status not in STATUSES:
            raise InvalidPoint(f"status must be one of {', '.join(STATUSES)}")
        if self._notifying:
            ids = list(point_ids)
            self._queued.append(lambda: self.set_status(ids, status))
            return 0
        changed = 0
        for point_id in point_ids:
            old = self._points.get(point_id)
            if old is None:
                continue
            new_status = status
            if old.value is None:
                if status == "ok":
                    new_status = "waiting"
            elif status == "waiting":
                continue  # a point with a value is not waiting for one
            if old.status == new_status:
                continue
            del self._points[point_id]
            self.version += 1
            self._points[point_id] = Point(point_id, old.value, old.unit, old.ts, new_status, self.version)
            changed += 1
        if changed:
            self._notify()
        return changed

    def declare(self, points: Iterable[tuple[str, str]]) -> int:
        """Make configured C{(point id, unit)} points exist before their first sample.

        A declared point has no value and the status C{waiting}, so clients
        and metrics see every configured point from the start, not only those
        that reported. Points the hub already holds are left alone. Returns
        how many were added (one notification for all of them).
        """
        now = self._clock()
        added = 0
        for point_id, unit in points:
            check_point_id(point_id)
            _check_unit(unit)
            if point_id in self._points:
                continue
            self._units.setdefault(unit_of(point_id), []).append(point_id)
            self.version += 1
            self._points[point_id] = Point(point_id, None, unit, now, "waiting", self.version)
            added += 1
        if added:
            self._notify()
        return added

    def configure(self, point_id: str, meta: PointMeta) -> None:
        """Record configuration for a point (it need not have a value yet)."""
        self.meta[check_point_id(point_id)] = meta

    # -- reading ------------------------------------------------------------

    def get(self, point_id: str) -> Point | None:
        return self._points.get(point_id)

    def __len__(self) -> int:
        return len(self._points)

    def status_counts(self) -> dict[str, int]:
        """How many points have each status (every status listed, zeros included)."""
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for point in self._points.values():
            counts[point.status] += 1
        return counts

    def points(self, subscription: Subscription | None = None) -> list[Point]:
        """Every current point matching C{subscription} (all if L{None}), oldest change first."""
        if subscription is None or subscription.everything:
            return list(self._points.values())
        if subscription.units is not None:
            # Only the named units' points, matched without filling the memo, in version order.
            points = self._points
            matches = subscription.matches_uncached
            found = [
                points[point_id]
                for unit in subscription.units
                for point_id in self._units.get(unit, ())
                if matches(point_id)
            ]
            found.sort(key=_version)
            return found
        return [p for p in self._points.values() if subscription.matches_uncached(p.point_id)]

    def changed_since(self, version: int, subscription: Subscription | None = None) -> list[Point]:
        """Points of C{subscription} whose version is newer than C{version}, oldest first.

        Walks back from the newest change and stops at the first older one, so
        the cost is proportional to the number of changes, not of points.
        """
        if version >= self.version:
            return []
        newer: list[Point] = []
        for point in self._newest_first():
            if point.version <= version:
                break
            if subscription is None or subscription.matches(point.point_id):
                newer.append(point)
        newer.reverse()
        return newer

    def _newest_first(self) -> Iterator[Point]:
        return reversed(self._points.values())

    # -- listening ----------------------------------------------------------

    def add_listener(self, listener: ChangeListener) -> None:
        """Call C{listener()} (no arguments) after each accepted change or batch."""
        self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        self._listeners.remove(listener)

    def _notify(self) -> None:
        """Tell every listener; writes they make meanwhile are applied afterwards, in order."""
        self._notifying = True
        try:
            for listener in list(self._listeners):
                try:
                    listener()
                except Exception:
                    self.log.failure("hub change listener {listener!r} failed", listener=listener)
        finally:
            self._notifying = False
        while self._queued and not self._notifying:
            self._queued.pop(0)()
