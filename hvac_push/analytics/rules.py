"""Fault detection rules: equipment faults found from the relations between a unit's points.

L{FaultRules} follows the hub (L{HubFollower}), as derived points do. On each
change of a point of a unit that has rules, that unit's rules are evaluated
against the hub's current values; a rule whose condition holds for its
persistence time (sample C{ts}, not the wall clock) raises a low-priority,
self-clearing alarm through L{AlarmEngine.predict} on the rule's main point.
Faults are maintenance advisories, not operator actions: severity
C{warning} (ISA-18.2 priority C{low}), no acknowledgement required.

Rules (thresholds in L{Thresholds}; sources and reasoning in docs/alarms.md):

 - C{supply_not_at_setpoint} (air handlers; after NIST APAR, House et al. 2001):
   supply air more than C{supply_tolerance} from its setpoint while the valve
   that should correct it is saturated (cooling valve open above
   C{valve_saturated} with the supply too warm, or heating valve with it too cold).
 - C{heating_and_cooling} (air handlers; APAR): heating and cooling valves both
   open more than C{valve_open}.
 - C{mixed_air_out_of_range} (air handlers; APAR): mixed air colder than both
   return and outside air, or warmer than both, by more than C{mixed_tolerance}.
 - C{low_delta_t} (chillers; low delta-T syndrome): chilled-water return minus
   supply below C{low_delta_t_fraction} of C{design_delta_t} while running.
 - C{approach} (chillers): leaving temperature minus its reference (e.g.
   evaporator refrigerant, or wet bulb for a tower) above C{approach_max}.
 - C{stuck} (any point): no change beyond C{stuck_band} for C{stuck_after}
   seconds of the unit running.
 - C{out_of_range} (any point): outside its physical range for C{range_sustain}.

Every rule but C{stuck} and C{out_of_range} must hold for C{sustain} seconds.
Rules with a point missing, or not C{ok}, are not decided (nothing changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.core.follow import HubFollower
from hvac_push.core.hub import Hub
from hvac_push.core.points import Point

#: The roles a unit's points can play, by rule.
ROLES = (
    "supply", "return", "setpoint", "running", "cooling_valve", "heating_valve", "mixed", "outside",
    "approach_leaving", "approach_reference",
)
KINDS = ("ahu", "chiller", "any")
RULE_KINDS = (
    "supply_not_at_setpoint", "heating_and_cooling", "mixed_air_out_of_range", "low_delta_t", "approach", "stuck",
    "out_of_range",
)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every threshold of every rule (temperatures in the points' unit, valves in %, times in seconds)."""

    sustain: float = 600.0
    supply_tolerance: float = 1.5
    valve_saturated: float = 95.0
    valve_open: float = 10.0
    mixed_tolerance: float = 1.0
    design_delta_t: float = 5.0
    low_delta_t_fraction: float = 0.5
    approach_max: float = 3.0
    stuck_band: float = 0.01
    stuck_after: float = 1800.0
    range_sustain: float = 60.0


@dataclass(frozen=True, slots=True)
class UnitRules:
    """The rules of one unit (C{site/unit}): its kind, which point plays which role, and thresholds."""

    unit: str
    kind: str = "any"
    #: Role (L{ROLES}) to point name within the unit.
    points: Mapping[str, str] = field(default_factory=dict)
    thresholds: Thresholds = Thresholds()
    #: Point name to its physical (low, high) range.
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    #: Point names watched for stuck values.
    stuck: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"rule kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        unknown = sorted(set(self.points) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown rule role {unknown[0]!r} (roles: {', '.join(ROLES)})")


@dataclass(slots=True)
class _Held:
    """One rule on one point: since when its condition holds, and whether its alarm is on."""

    since: float | None = None
    on: bool = False


@dataclass(slots=True)
class _Stuck:
    anchor: float
    since: float


class FaultRules:
    """Evaluates L{UnitRules} on every hub change of their units and raises their alarms."""

    def __init__(self, hub: Hub, alarms: AlarmEngine, rules: list[UnitRules]):
        self.hub = hub
        self.alarms = alarms
        self.rules = {r.unit: r for r in rules}
        self._held: dict[tuple[str, str], _Held] = {}
        self._stuck: dict[str, _Stuck] = {}
        self._follower = HubFollower(hub, self._changed)

    def close(self) -> None:
        """Stop following; clear every alarm these rules raised."""
        self._follower.close()
        for (point_id, kind), held in self._held.items():
            if held.on:
                self.alarms.predict(point_id, False, f"{point_id}: fault rules removed", kind=kind, ack_required=False)

    def _changed(self, point: Point) -> None:
        unit, _, name = point.point_id.rpartition("/")
        rules = self.rules.get(unit)
        if rules is None or point.status != "ok":
            return
        now = point.ts
        value = self._value(rules, name)
        if value is not None:
            self._point_rules(rules, point.point_id, name, value, now)
        if name in rules.points.values():
            self._unit_rules(rules, now)

    def _value(self, rules: UnitRules, name: str | None) -> float | None:
        """The current value of a point of the unit as a number (booleans as 0/1), or None if unusable."""
        if name is None:
            return None
        point = self.hub.get(f"{rules.unit}/{name}")
        if point is None or point.status != "ok" or point.value is None or isinstance(point.value, str):
            return None
        return float(point.value)

    def _role(self, rules: UnitRules, role: str) -> float | None:
        return self._value(rules, rules.points.get(role))

    def _running(self, rules: UnitRules) -> bool | None:
        if "running" not in rules.points:
            return True
        running = self._role(rules, "running")
        return None if running is None else running > 0

    # -- per point --------------------------------------------------------------

    def _point_rules(self, rules: UnitRules, point_id: str, name: str, value: float, now: float) -> None:
        t = rules.thresholds
        if name in rules.ranges:
            low, high = rules.ranges[name]
            self._hold(point_id, "out_of_range", not low <= value <= high, now, t.range_sustain,
                       f"{point_id} = {value:g} is outside its physical range {low:g} to {high:g}")
        if name in rules.stuck:
            running = self._running(rules)
            stuck = self._stuck.get(point_id)
            if stuck is None or abs(value - stuck.anchor) > t.stuck_band or not running:
                stuck = self._stuck[point_id] = _Stuck(value, now)
            self._hold(point_id, "stuck", now - stuck.since >= t.stuck_after, now, 0.0,
                       f"{point_id} has not moved beyond {t.stuck_band:g} for {t.stuck_after / 60:g} min of running")

    # -- per unit ---------------------------------------------------------------

    def _unit_rules(self, rules: UnitRules, now: float) -> None:
        t = rules.thresholds
        role = lambda name: self._role(rules, name)  # noqa: E731
        main: Callable[[str], str] = lambda name: f"{rules.unit}/{rules.points[name]}"  # noqa: E731
        if rules.kind == "ahu":
            supply, setpoint = role("supply"), role("setpoint")
            cooling, heating = role("cooling_valve"), role("heating_valve")
            if supply is not None and setpoint is not None and (cooling is not None or heating is not None):
                too_warm = supply > setpoint + t.supply_tolerance and (cooling or 0.0) >= t.valve_saturated
                too_cold = supply < setpoint - t.supply_tolerance and (heating or 0.0) >= t.valve_saturated
                self._hold(main("supply"), "supply_not_at_setpoint", too_warm or too_cold, now, t.sustain,
                           f"{rules.unit}: supply air {supply:g} is off its setpoint {setpoint:g} "
                           "with the valve saturated")
            if cooling is not None and heating is not None:
                both = cooling > t.valve_open and heating > t.valve_open
                self._hold(main("cooling_valve"), "heating_and_cooling", both, now, t.sustain,
                           f"{rules.unit}: heating ({heating:g} %) and cooling ({cooling:g} %) at once")
            mixed, returned, outside = role("mixed"), role("return"), role("outside")
            if mixed is not None and returned is not None and outside is not None:
                low, high = min(returned, outside), max(returned, outside)
                out = mixed < low - t.mixed_tolerance or mixed > high + t.mixed_tolerance
                self._hold(main("mixed"), "mixed_air_out_of_range", out, now, t.sustain,
                           f"{rules.unit}: mixed air {mixed:g} is outside return {returned:g} and outside {outside:g}")
        if rules.kind == "chiller":
            supply, returned, running = role("supply"), role("return"), self._running(rules)
            if supply is not None and returned is not None and running is not None:
                floor = t.design_delta_t * t.low_delta_t_fraction
                low = running and returned - supply < floor
                self._hold(main("return"), "low_delta_t", low, now, t.sustain,
                           f"{rules.unit}: chilled-water delta-T {returned - supply:.1f} below {floor:g} "
                           f"(design {t.design_delta_t:g})")
            leaving, reference = role("approach_leaving"), role("approach_reference")
            if leaving is not None and reference is not None and running is not None:
                wide = running and leaving - reference > t.approach_max
                self._hold(main("approach_leaving"), "approach", wide, now, t.sustain,
                           f"{rules.unit}: approach {leaving - reference:.1f} above {t.approach_max:g}")

    def _hold(self, point_id: str, kind: str, condition: bool, now: float, sustain: float, message: str) -> None:
        """The rule's condition at C{now}; its alarm comes on once it held for C{sustain} and goes when it stops."""
        held = self._held.setdefault((point_id, kind), _Held())
        if not condition:
            held.since = None
            if held.on:
                held.on = False
                self.alarms.predict(point_id, False, message, kind=kind, ack_required=False)
            return
        if held.since is None:
            held.since = now
        if not held.on and now - held.since >= sustain:
            held.on = True
            self.alarms.predict(point_id, True, message, kind=kind, ack_required=False)


def simulator_rules(site: str, unit_names: list[str]) -> list[UnitRules]:
    """Rules for the built-in simulator's units (its points: supply/return temperatures, setpoint, compressor)."""
    rules = []
    for name in unit_names:
        kind = "chiller" if name.startswith("chiller") else "any"
        ranges = {"supply_temp": (-5.0, 40.0), "return_temp": (-5.0, 50.0), "fan_speed": (0.0, 100.0)}
        rules.append(UnitRules(
            f"{site}/{name}", kind,
            {"supply": "supply_temp", "return": "return_temp", "setpoint": "setpoint", "running": "compressor"},
            ranges=ranges, stuck=("supply_temp", "return_temp"),
        ))
    return rules
