"""What a client holds: points, alarms, and the changes between two states.

Everything here is plain data, without I/O, so the mirror's bookkeeping can be
tested and reused (by a thread-based client, say) apart from the socket.
The client layer imports nothing of the server: it reads the protocol of
docs/protocol.md on its own, tolerantly, so a newer server's extra fields and
statuses never break an older client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Union

#: A point's value: a number, a bool, a short string, or None for a point that never reported.
Value = Union[float, int, bool, str, None]

_POINT_FIELDS = frozenset({"value", "unit", "ts", "version", "status"})
_ALARM_FIELDS = frozenset({"id", "point", "kind", "state", "severity", "value", "limit", "ts", "message"})


@dataclass(frozen=True, slots=True)
class PointState:
    """One point as the server last sent it.

    C{status} is a plain string: C{ok}, C{stale}, C{fault} today, and
    whatever a later server adds (C{down}, say). Fields the client does not
    know are kept in C{extra}.
    """

    point_id: str
    value: Value
    unit: str = ""
    ts: float | None = None
    version: int = 0
    status: str = "ok"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=True)

    @classmethod
    def from_wire(cls, point_id: str, body: Mapping[str, Any]) -> PointState:
        """Read one C{"id": {...}} member; a missing or odd field takes a harmless default."""
        value = body.get("value")
        ts = body.get("ts")
        version = body.get("version")
        unit = body.get("unit")
        status = body.get("status")
        return cls(
            point_id=point_id,
            value=value if value is None or isinstance(value, (int, float, str)) else None,
            unit=unit if isinstance(unit, str) else "",
            ts=float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else None,
            version=version if isinstance(version, int) and not isinstance(version, bool) else 0,
            status=status if isinstance(status, str) else "ok",
            extra={k: v for k, v in body.items() if k not in _POINT_FIELDS},
        )

    def to_wire(self) -> dict[str, Any]:
        """The point as the server sends it (for comparing with a snapshot, or printing as JSON)."""
        return {
            **self.extra,
            "value": self.value,
            "unit": self.unit,
            "ts": self.ts,
            "version": self.version,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class Alarm:
    """One listed alarm (docs/protocol.md, C{alarm}); C{state} and C{kind} are open-ended strings."""

    id: str
    point: str
    kind: str
    state: str
    severity: str
    value: Value = None
    limit: float | None = None
    ts: float | None = None
    message: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def listed(self) -> bool:
        """Whether the server still lists it (C{normal} means gone and acknowledged)."""
        return self.state != "normal"

    @property
    def needs_ack(self) -> bool:
        return self.state in ("active", "returned")

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Alarm | None:
        """Read an alarm object, or None when it lacks an id."""
        alarm_id = body.get("id")
        if not isinstance(alarm_id, str):
            return None

        def text(key: str, default: str = "") -> str:
            found = body.get(key)
            return found if isinstance(found, str) else default

        value = body.get("value")
        limit = body.get("limit")
        ts = body.get("ts")
        return cls(
            id=alarm_id,
            point=text("point", alarm_id.rpartition(":")[0]),
            kind=text("kind", alarm_id.rpartition(":")[2]),
            state=text("state", "active"),
            severity=text("severity"),
            value=value if value is None or isinstance(value, (int, float, str)) else None,
            limit=float(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) else None,
            ts=float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else None,
            message=text("message"),
            extra={k: v for k, v in body.items() if k not in _ALARM_FIELDS},
        )


@dataclass(frozen=True, slots=True)
class PointChange:
    """A point that changed in the mirror.

    C{point} is the new state, None when the point left the mirror (an
    unsubscribe, or a resync from a server that no longer has it);
    C{previous} is what the mirror held before, None for a new point.
    C{resync} marks changes that come from replacing the whole mirror.
    """

    point_id: str
    point: PointState | None
    previous: PointState | None = None
    resync: bool = False

    @property
    def value(self) -> Value:
        return None if self.point is None else self.point.value

    @property
    def status(self) -> str | None:
        return None if self.point is None else self.point.status

    @property
    def unit(self) -> str:
        return "" if self.point is None else self.point.unit

    @property
    def ts(self) -> float | None:
        return None if self.point is None else self.point.ts

    @property
    def removed(self) -> bool:
        return self.point is None


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """An alarm transition (C{seq} from the server), or an alarm that a resync added or dropped.

    C{alarm.state == "normal"} (or C{alarm} None after a resync) means it is no longer listed.
    """

    alarm_id: str
    alarm: Alarm | None
    previous: Alarm | None = None
    seq: int | None = None
    resync: bool = False


@dataclass(frozen=True, slots=True)
class Filter:
    """A change-of-value filter for a subscription (docs/protocol.md, Change-of-value filters).

    C{deadband} in the point's unit; intervals in seconds (the wire uses milliseconds).
    """

    deadband: float | None = None
    min_interval: float | None = None
    max_interval: float | None = None

    def to_wire(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.deadband is not None:
            fields["deadband"] = self.deadband
        if self.min_interval is not None:
            fields["min_interval_ms"] = round(self.min_interval * 1000)
        if self.max_interval is not None:
            fields["max_interval_ms"] = round(self.max_interval * 1000)
        return fields


def pattern_matches(pattern: str, point_id: str) -> bool:
    """MQTT-style matching over the three levels: C{+} one level, a final C{#} the rest."""
    want = pattern.split("/")
    have = point_id.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return True
        if index >= len(have) or (level != "+" and level != have[index]):
            return False
    return len(want) == len(have)


def matches_any(patterns: Iterable[str], point_id: str) -> bool:
    return any(pattern_matches(p, point_id) for p in patterns)
