"""The mirror's bookkeeping: server messages in, changes out, no I/O.

The rules it follows are those of docs/protocol.md:

- the first message of a connection is a C{snapshot} (replace everything) or,
  after a resume in the same epoch, an C{update} (apply it);
- a later C{snapshot} with C{resync} replaces everything; one without it
  answers a C{subscribe} and only adds points;
- the C{version} to resume from comes from opening snapshots and updates only:
  a subscribe answer carries the hub's version, which can be ahead of what
  this connection was sent;
- alarm transitions carry a C{seq}; an C{alarms} message replaces the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, TypeGuard

from hvac_push.client.model import Alarm, AlarmChange, PointChange, PointState, matches_any


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a reconnect picks up: C{?since=version&epoch=epoch&alarm_seq=alarm_seq}."""

    epoch: str
    version: int
    alarm_seq: int | None


class MirrorState:
    """Points and alarms of one subscription, kept equal to the server's."""

    def __init__(self) -> None:
        self.points: dict[str, PointState] = {}
        self.alarms: dict[str, Alarm] = {}
        self.epoch: str | None = None
        self.version: int | None = None
        self.alarm_seq: int | None = None
        self.resyncs = 0
        self.resumes = 0

    def resume_point(self) -> ResumePoint | None:
        """What to ask for on reconnect, or None before the first snapshot."""
        if self.epoch is None or self.version is None:
            return None
        return ResumePoint(self.epoch, self.version, self.alarm_seq)

    # -- messages ---------------------------------------------------------

    def receive(self, message: Mapping[str, Any], *, opening: bool) -> list[PointChange | AlarmChange]:
        """Apply one server message; C{opening} says it is the first of its connection.

        Messages of other types (answers, errors, types a later server adds)
        change nothing here and return no change.
        """
        kind = message.get("type")
        if kind == "snapshot":
            return self._snapshot(message, opening=opening)
        if kind == "update":
            if opening:
                self.resumes += 1
            return self._update(message)
        if kind == "alarm":
            return self._alarm(message)
        if kind == "alarms":
            return self._alarm_list(message)
        return []

    def _snapshot(self, message: Mapping[str, Any], *, opening: bool) -> list[PointChange | AlarmChange]:
        points = _points_of(message)
        epoch = message.get("epoch")
        resync = bool(message.get("resync"))
        new_epoch = isinstance(epoch, str) and self.epoch is not None and epoch != self.epoch
        if not (opening or resync or new_epoch):
            # The answer to a subscribe: newly matched points, added to what is held.
            return self._apply_points(points, resync=False)
        if resync or new_epoch or self.epoch is not None:
            self.resyncs += 1
        changes: list[PointChange | AlarmChange] = []
        for point_id, old in list(self.points.items()):
            if point_id not in points:
                del self.points[point_id]
                changes.append(PointChange(point_id, None, old, resync=True))
        changes.extend(self._apply_points(points, resync=True))
        if isinstance(epoch, str):
            self.epoch = epoch
        version = message.get("version")
        if _is_int(version):
            self.version = version
        alarms = message.get("alarms")
        if isinstance(alarms, list):
            changes.extend(self._replace_alarms(alarms, message.get("alarm_seq")))
        return changes

    def _update(self, message: Mapping[str, Any]) -> list[PointChange | AlarmChange]:
        epoch = message.get("epoch")
        if isinstance(epoch, str):
            self.epoch = epoch
        version = message.get("version")
        if _is_int(version):
            self.version = version
        return self._apply_points(_points_of(message), resync=False)

    def _apply_points(self, points: Mapping[str, PointState], *, resync: bool) -> list[PointChange | AlarmChange]:
        changes: list[PointChange | AlarmChange] = []
        for point_id, point in points.items():
            old = self.points.get(point_id)
            if old != point:
                self.points[point_id] = point
                changes.append(PointChange(point_id, point, old, resync=resync))
        return changes

    def _alarm(self, message: Mapping[str, Any]) -> list[PointChange | AlarmChange]:
        body = message.get("alarm")
        alarm = Alarm.from_wire(body) if isinstance(body, dict) else None
        if alarm is None:
            return []
        seq = message.get("seq")
        if _is_int(seq):
            self.alarm_seq = max(seq, self.alarm_seq or 0)
        previous = self.alarms.get(alarm.id)
        if alarm.listed:
            self.alarms[alarm.id] = alarm
        else:
            self.alarms.pop(alarm.id, None)
        return [AlarmChange(alarm.id, alarm, previous, seq=seq if _is_int(seq) else None)]

    def _alarm_list(self, message: Mapping[str, Any]) -> list[PointChange | AlarmChange]:
        alarms = message.get("alarms")
        if not isinstance(alarms, list):
            return []
        return self._replace_alarms(alarms, message.get("alarm_seq"))

    def _replace_alarms(self, raw: list[Any], alarm_seq: object) -> list[PointChange | AlarmChange]:
        fresh = {a.id: a for a in (Alarm.from_wire(x) for x in raw if isinstance(x, dict)) if a is not None}
        changes: list[PointChange | AlarmChange] = []
        for alarm_id, old in list(self.alarms.items()):
            if alarm_id not in fresh:
                del self.alarms[alarm_id]
                changes.append(AlarmChange(alarm_id, None, old, resync=True))
        for alarm_id, alarm in fresh.items():
            old_alarm = self.alarms.get(alarm_id)
            if old_alarm != alarm:
                self.alarms[alarm_id] = alarm
                changes.append(AlarmChange(alarm_id, alarm, old_alarm, resync=True))
        if _is_int(alarm_seq):
            self.alarm_seq = alarm_seq
        return changes

    # -- local decisions ------------------------------------------------------

    def keep_only(self, patterns: Iterable[str]) -> list[PointChange | AlarmChange]:
        """Drop the points and alarms no pattern covers any more (after an unsubscribe)."""
        kept = tuple(patterns)
        changes: list[PointChange | AlarmChange] = []
        for point_id, old in list(self.points.items()):
            if not matches_any(kept, point_id):
                del self.points[point_id]
                changes.append(PointChange(point_id, None, old))
        for alarm_id, alarm in list(self.alarms.items()):
            if not matches_any(kept, alarm.point):
                del self.alarms[alarm_id]
                changes.append(AlarmChange(alarm_id, None, alarm))
        return changes


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _points_of(message: Mapping[str, Any]) -> dict[str, PointState]:
    raw = message.get("points")
    if not isinstance(raw, dict):
        return {}
    return {
        point_id: PointState.from_wire(point_id, body)
        for point_id, body in raw.items()
        if isinstance(point_id, str) and isinstance(body, dict)
    }
