"""Small frozen value types: point ids, samples, stored points and subscription patterns.

Everything here is pure and immutable so it can cross threads safely and be shared
between the hub, the wire format and the producers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Literal, Union

Value = Union[float, int, bool, str]

#: A point id is ``site/unit/point``; each level is a safe, JSON-clean token.
_LEVEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
#: What a point's value is worth (docs/protocol.md, Status): fresh; too old; a reading
#: that failed; a source that cannot reach its device; declared but not heard from yet.
Status = Literal["ok", "stale", "fault", "down", "waiting"]
STATUSES: tuple[Status, ...] = ("ok", "stale", "fault", "down", "waiting")
MAX_STRING_VALUE = 256


class InvalidPoint(ValueError):
    """A sample that the hub refuses: bad id, value type or status."""


def check_point_id(point_id: str) -> str:
    """Return C{point_id} if it is a valid ``site/unit/point`` id, else raise L{InvalidPoint}."""
    if not isinstance(point_id, str):
        raise InvalidPoint(f"point id must be a string, not {type(point_id).__name__}")
    levels = point_id.split("/")
    if len(levels) != 3 or not all(_LEVEL.match(level) for level in levels):
        raise InvalidPoint(
            f"bad point id {point_id!r}: expected site/unit/point, each level of "
            "letters, digits, '_', '.' or '-'"
        )
    return point_id


def is_name(text: str) -> bool:
    """True if C{text} can be one level of a point id: the rule for site, unit and point names."""
    return _LEVEL.match(text) is not None


def check_value(value: object) -> Value:
    """Return C{value} if it is a number, bool or short string that JSON can carry."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise InvalidPoint(f"integer value {value} is outside the exact JSON range")
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidPoint("value must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING_VALUE:
            raise InvalidPoint(f"string value longer than {MAX_STRING_VALUE} characters")
        return value
    raise InvalidPoint(f"value must be a number, bool or string, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading as a producer hands it over: what it measured and when.

    C{ts} is epoch seconds at which the producer measured the value; L{None}
    means "now", filled in by the publisher at hand-over time.
    """

    point_id: str
    value: Value
    unit: str = ""
    ts: float | None = None
    status: Status = "ok"


@dataclass(frozen=True, slots=True)
class Point:
    """A point as the hub holds it: the latest sample plus the hub version that stored it.

    C{value} is L{None} for a declared point that never had a reading; its
    C{ts} is then when the hub last learned its status, and its status is
    never C{ok}.
    """

    point_id: str
    value: Value | None
    unit: str
    ts: float
    status: Status
    version: int


Severity = Literal["critical", "major", "minor", "warning"]
SEVERITIES: tuple[Severity, ...] = ("critical", "major", "minor", "warning")


@dataclass(frozen=True, slots=True)
class AlarmLimits:
    """Limit alarm settings for one point (any limit may be absent).

    The alarm triggers when the value stays beyond a limit for C{delay}
    seconds, and clears only once it is back inside by more than C{deadband}
    for C{delay_normal} seconds (ISA-18.2 on- and off-delays). Without
    C{ack_required} a cleared alarm needs no acknowledgement; with C{latch}
    it stays annunciated until acknowledged even after the value returns.
    C{group} and C{notification_class} (BACnet-style) travel on the alarm
    for routing.
    """

    high: float | None = None
    low: float | None = None
    deadband: float = 0.0
    delay: float = 0.0
    severity: Severity = "major"
    delay_normal: float = 0.0
    ack_required: bool = True
    latch: bool = False
    group: str | None = None
    notification_class: int | None = None


@dataclass(frozen=True, slots=True)
class PointMeta:
    """What configuration knows about a point beyond its samples."""

    name: str = ""
    #: Seconds between updates the source promises; silence for 3x this makes the point stale.
    expected_interval: float | None = None
    limits: AlarmLimits | None = None


@dataclass(frozen=True, slots=True)
class CovRule:
    """Change-of-value filter for one subscribed pattern (BACnet COV / OPC UA style).

    A value is sent when it moved more than C{deadband} from the last value
    sent, or when C{max_interval} seconds passed since then; never more often
    than every C{min_interval} seconds.
    """

    deadband: float = 0.0
    min_interval: float = 0.0
    max_interval: float | None = None


@dataclass(frozen=True, slots=True)
class Pattern:
    """An MQTT-style filter over the three levels of a point id.

    ``+`` matches exactly one level and ``#`` (last level only) matches the rest.
    """

    text: str
    levels: tuple[str, ...] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        if not isinstance(text, str) or not text or len(text) > 256:
            raise InvalidPoint(f"bad pattern {text!r}: must be a non-empty string")
        levels = tuple(text.split("/"))
        for index, level in enumerate(levels):
            if level == "#":
                if index != len(levels) - 1:
                    raise InvalidPoint(f"bad pattern {text!r}: '#' must be the last level")
            elif level == "+":
                continue
            elif not _LEVEL.match(level):
                raise InvalidPoint(
                    f"bad pattern {text!r}: level {level!r} is neither a name, '+' nor '#'"
                )
        if levels[-1] != "#" and len(levels) != 3:
            raise InvalidPoint(f"bad pattern {text!r}: expected three levels or a trailing '#'")
        if len(levels) > 4:
            raise InvalidPoint(f"bad pattern {text!r}: too many levels")
        return cls(text, levels)

    def matches(self, point_id: str) -> bool:
        parts = point_id.split("/")
        for index, level in enumerate(self.levels):
            if level == "#":
                return True
            if index >= len(parts):
                return False
            if level != "+" and level != parts[index]:
                return False
        return len(parts) == len(self.levels)


class Subscription:
    """An immutable set of patterns with a memo of which point ids it matches.

    Subscriptions are interned by L{Subscription.of} so that clients with the
    same filters share one object, one match memo and one delivery group.
    """

    __slots__ = ("patterns", "key", "everything", "_memo", "units")

    _interned: dict[frozenset[str], "Subscription"] = {}

    def __init__(self, patterns: frozenset[Pattern]):
        self.patterns = patterns
        self.key = frozenset(p.text for p in patterns)
        self.everything = "#" in self.key
        self._memo: dict[str, bool] = {}
        #: The C{(site, unit)} pairs this subscription can match, when every
        #: pattern names both literally (C{site/unit/#}, C{site/unit/point});
        #: L{None} otherwise. Lets the hub and the fan-out look only at those
        #: units' points instead of matching every point id of the plant.
        self.units: frozenset[tuple[str, str]] | None = _units_of(patterns)

    @classmethod
    def of(cls, patterns: Iterable[Pattern]) -> "Subscription":
        frozen = frozenset(patterns)
        key = frozenset(p.text for p in frozen)
        found = cls._interned.get(key)
        if found is None:
            if len(cls._interned) > 10_000:
                cls._interned.clear()
            found = cls._interned[key] = cls(frozen)
        return found

    def matches(self, point_id: str) -> bool:
        if self.everything:
            return True
        hit = self._memo.get(point_id)
        if hit is None:
            hit = any(p.matches(point_id) for p in self.patterns)
            if len(self._memo) < 100_000:
                self._memo[point_id] = hit
        return hit

    def matches_uncached(self, point_id: str) -> bool:
        """L{matches} without filling the memo (for one-off scans, e.g. a snapshot)."""
        if self.everything:
            return True
        hit = self._memo.get(point_id)
        if hit is None:
            return any(p.matches(point_id) for p in self.patterns)
        return hit

    def __repr__(self) -> str:
        return f"Subscription({sorted(self.key)!r})"


def unit_of(point_id: str) -> tuple[str, str]:
    """The C{(site, unit)} of a C{site/unit/point} id."""
    site, unit, _ = point_id.split("/", 2)
    return site, unit


def _units_of(patterns: Iterable[Pattern]) -> frozenset[tuple[str, str]] | None:
    units = set()
    for pattern in patterns:
        levels = pattern.levels
        if len(levels) < 3 or levels[0] in ("+", "#") or levels[1] in ("+", "#"):
            return None
        units.add((levels[0], levels[1]))
    return frozenset(units) if units else None


EVERYTHING = Subscription.of([Pattern.parse("#")])
