"""Alarms: limits with deadband and delay, point-status alarms, acknowledgement, a replay ring.

Each alarm is identified by C{"<point id>:<kind>"}. Its life:

    normal --condition--> active --ack--> acknowledged --clears--> normal
                            |                                   
                            +--clears--> returned --ack--> normal
                                            |
                                            +--condition again--> active

Every transition gets the next C{seq} and is kept in a bounded ring, so a
client that reconnects can replay exactly what it missed. Alarm messages are
never coalesced.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from hvac_push.core.follow import HubFollower
from hvac_push.core.hub import Hub
from hvac_push.core.points import AlarmLimits, Point, Value

#: States in which an alarm is listed (anything but normal).
LISTED = ("active", "acknowledged", "returned")
STATUS_SEVERITY = "major"
#: Alarm kinds this engine evaluates itself: limits and point statuses.
ENGINE_KINDS = ("high", "low", "stale", "fault", "down")


@dataclass(frozen=True, slots=True)
class Alarm:
    id: str
    point: str
    kind: str
    state: str
    severity: str
    value: Value | None
    limit: float | None
    ts: float
    message: str


AlarmListener = Callable[[int, Alarm], None]


class UnknownAlarm(KeyError):
    pass


class AlarmEngine:
    """Evaluates every hub change against its point's limits and status."""

    def __init__(self, hub: Hub, clock: IReactorTime, ring_size: int = 1000):
        self.hub = hub
        self.clock = clock
        self.seq = 0
        #: Alarms that are not normal, by id.
        self.alarms: dict[str, Alarm] = {}
        #: Limits set through the API; they take precedence over configured ones.
        self.limits: dict[str, AlarmLimits] = {}
        self.ring: deque[tuple[int, Alarm]] = deque(maxlen=ring_size)
        self._pending: dict[str, IDelayedCall] = {}
        self._listeners: list[AlarmListener] = []
        self._follower = HubFollower(hub, self.evaluate)

    # -- configuration --------------------------------------------------------

    def set_limits(self, point_id: str, limits: AlarmLimits | None) -> None:
        """Set (or with L{None} remove) a point's limits; re-evaluated at once."""
        if limits is None:
            self.limits.pop(point_id, None)
        else:
            self.limits[point_id] = limits
        point = self.hub.get(point_id)
        if point is not None:
            self.evaluate(point)

    def limits_for(self, point_id: str) -> AlarmLimits | None:
        limits = self.limits.get(point_id)
        if limits is None:
            meta = self.hub.meta.get(point_id)
            limits = meta.limits if meta is not None else None
        return limits

    def add_listener(self, listener: AlarmListener) -> None:
        self._listeners.append(listener)

    def predict(
        self,
        point_id: str,
        on: bool,
        message: str = "",
        *,
        kind: str = "predicted",
        limit: float | None = None,
        severity: str = "warning",
    ) -> None:
        """Set or clear a condition computed elsewhere (e.g. L{hvac_push.analytics.derived}) on a known point.

        The alarm C{<point_id>:<kind>} then follows the usual life (active,
        acknowledged, returned, normal), with no delay. C{kind} must not be one
        this engine evaluates itself (C{high}, C{low}, C{stale}, C{fault}, C{down}).
        """
        if kind in ENGINE_KINDS:
            raise ValueError(f"alarm kind {kind!r} is evaluated by the engine itself")
        point = self.hub.get(point_id)
        if point is not None:
            self._condition(point, kind, on, limit, severity, 0.0, message)

    # -- evaluation -----------------------------------------------------------

    def evaluate(self, point: Point) -> None:
        self._condition(point, "stale", point.status == "stale", None, STATUS_SEVERITY, 0.0,
                        f"{point.point_id} stopped reporting")
        self._condition(point, "fault", point.status == "fault", None, STATUS_SEVERITY, 0.0,
                        f"{point.point_id}: source fault")
        self._condition(point, "down", point.status == "down", None, STATUS_SEVERITY, 0.0,
                        f"{point.point_id}: the source cannot reach its device")
        limits = self.limits_for(point.point_id)
        value = point.value
        if point.status != "ok" or value is None or isinstance(value, (bool, str)):
            return  # an old, missing or non-numeric value says nothing new about limits
        if limits is None:
            for kind in ("high", "low"):
                self._condition(point, kind, False, None, "", 0.0, "")
            return
        if limits.high is not None:
            on = value > (limits.high - limits.deadband if self._is_on(point, "high") else limits.high)
            self._condition(point, "high", on, limits.high, limits.severity, limits.delay,
                            f"{point.point_id} above {limits.high:g}")
        if limits.low is not None:
            on = value < (limits.low + limits.deadband if self._is_on(point, "low") else limits.low)
            self._condition(point, "low", on, limits.low, limits.severity, limits.delay,
                            f"{point.point_id} below {limits.low:g}")

    def _is_on(self, point: Point, kind: str) -> bool:
        alarm = self.alarms.get(f"{point.point_id}:{kind}")
        return alarm is not None and alarm.state in ("active", "acknowledged")

    def _condition(
        self, point: Point, kind: str, on: bool, limit: float | None, severity: str, delay: float, message: str
    ) -> None:
        alarm_id = f"{point.point_id}:{kind}"
        if on:
            if self._is_on(point, kind) or alarm_id in self._pending:
                return
            if delay > 0:
                self._pending[alarm_id] = self.clock.callLater(delay, self._delay_over, alarm_id, kind)
            else:
                self._raise(alarm_id, point, kind, limit, severity, message)
            return
        pending = self._pending.pop(alarm_id, None)
        if pending is not None and pending.active():
            pending.cancel()
        current = self.alarms.get(alarm_id)
        if current is not None and current.state in ("active", "acknowledged"):
            cleared = "returned" if current.state == "active" else "normal"
            self._transition(replace(current, state=cleared, value=point.value, ts=point.ts))

    def _delay_over(self, alarm_id: str, kind: str) -> None:
        """The condition held for the whole delay: raise, with the newest value."""
        self._pending.pop(alarm_id, None)
        point_id = alarm_id.rpartition(":")[0]
        point = self.hub.get(point_id)
        limits = self.limits_for(point_id)
        if point is None or limits is None:
            return
        limit = limits.high if kind == "high" else limits.low
        message = f"{point_id} {'above' if kind == 'high' else 'below'} {limit:g}"
        self._raise(alarm_id, point, kind, limit, limits.severity, message)

    def _raise(self, alarm_id: str, point: Point, kind: str, limit: float | None, severity: str, message: str) -> None:
        self._transition(Alarm(alarm_id, point.point_id, kind, "active", severity, point.value, limit, point.ts, message))

    def _transition(self, alarm: Alarm) -> None:
        self.seq += 1
        if alarm.state == "normal":
            self.alarms.pop(alarm.id, None)
        else:
            self.alarms[alarm.id] = alarm
        self.ring.append((self.seq, alarm))
        for listener in list(self._listeners):
            listener(self.seq, alarm)

    # -- operators ------------------------------------------------------------

    def ack(self, alarm_id: str) -> Alarm:
        """Acknowledge: active becomes acknowledged, returned becomes normal."""
        current = self.alarms.get(alarm_id)
        if current is None:
            raise UnknownAlarm(alarm_id)
        if current.state == "acknowledged":
            return current
        state = "acknowledged" if current.state == "active" else "normal"
        acked = replace(current, state=state, ts=self.clock.seconds())
        self._transition(acked)
        return acked

    # -- reading --------------------------------------------------------------

    def current(self, visible: Callable[[str], bool] = lambda point_id: True) -> list[Alarm]:
        return [a for a in self.alarms.values() if visible(a.point)]

    def replay(self, after_seq: int) -> list[tuple[int, Alarm]] | None:
        """Transitions after C{after_seq}, or L{None} if the ring no longer reaches back that far."""
        if after_seq >= self.seq:
            return []
        if not self.ring or self.ring[0][0] > after_seq + 1:
            return None
        return [(seq, alarm) for seq, alarm in self.ring if seq > after_seq]

    def close(self) -> None:
        self._follower.close()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
