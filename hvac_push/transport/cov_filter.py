"""Per-client change-of-value filtering (deadband, minimum and maximum interval).

A client with filters cannot share frames with others, so it gets its own
path in the flush; clients without filters never touch this module.
"""

from __future__ import annotations

from typing import Iterable

from hvac_push.core.hub import Hub
from hvac_push.core.points import CovRule, Pattern, Point, Subscription, Value


class CovFilter:
    """Remembers what one client was last sent, and decides what it is sent next."""

    def __init__(self) -> None:
        self.rules: dict[Pattern, CovRule] = {}
        #: point id -> (value, status, when sent on the reactor clock)
        self.sent: dict[str, tuple[Value | None, str, float]] = {}
        #: Points whose newest value was held back and must be looked at again.
        self.held: set[str] = set()

    def set_rule(self, patterns: Iterable[Pattern], rule: CovRule | None) -> None:
        for pattern in patterns:
            if rule is None:
                self.rules.pop(pattern, None)
            else:
                self.rules[pattern] = rule

    def rule_for(self, point_id: str) -> CovRule | None:
        for pattern, rule in self.rules.items():
            if pattern.matches(point_id):
                return rule
        return None

    def record(self, points: Iterable[Point], now: float) -> None:
        """Note points sent outside the filter (snapshots)."""
        for point in points:
            self.sent[point.point_id] = (point.value, point.status, now)
            self.held.discard(point.point_id)

    def select(self, hub: Hub, since: int, subscription: Subscription, now: float) -> list[Point]:
        """The points to send now: changed since C{since} or held, and passing the filter."""
        candidates = {p.point_id: p for p in hub.changed_since(since, subscription)}
        for point_id in self.held:
            if point_id not in candidates:
                point = hub.get(point_id)
                if point is not None and subscription.matches(point_id):
                    candidates[point_id] = point
        self.held = set()
        chosen = []
        for point in candidates.values():
            if self._due(point, now):
                chosen.append(point)
                self.sent[point.point_id] = (point.value, point.status, now)
        chosen.sort(key=lambda p: p.version)
        return chosen

    def _due(self, point: Point, now: float) -> bool:
        rule = self.rule_for(point.point_id)
        last = self.sent.get(point.point_id)
        if rule is None or last is None:
            return True
        value, status, when = last
        elapsed = now - when
        if elapsed < rule.min_interval:
            self.held.add(point.point_id)
            return False
        if status != point.status:
            return True
        if rule.max_interval is not None and elapsed >= rule.max_interval:
            return True
        moved = _moved(value, point.value)
        if moved is None or moved > rule.deadband:
            return True
        if rule.max_interval is not None:
            self.held.add(point.point_id)
        return False


def _moved(old: Value | None, new: Value | None) -> float | None:
    """How far a number moved; L{None} (always send) for a change of a bool or string, or to or from no value."""
    if old is None or new is None:
        return None if old is not new else 0.0
    if isinstance(old, (bool, str)) or isinstance(new, (bool, str)):
        return None if old != new else 0.0
    return abs(new - old)
