"""Derived points: forecasts, energy, efficiency and equipment health, computed live.

L{DerivedPoints} follows the hub (L{HubFollower}); each changed input point
updates small per-unit state, and the derived values are published back into
the hub in one C{publish_many} per hub batch, so clients get them like any
other point. Ids sit under the unit of their inputs::

    plant/chiller-1/supply_temp.forecast_15m   plant/chiller-1/energy_kwh
    plant/chiller-1/supply_temp.minutes_to_limit   plant/site/energy_kwh

Every derived sample carries the C{ts} of the input sample that produced it.
Points this object published are never taken back in as inputs, and neither
is any point whose name contains a dot (the derived-point convention), so
there is no feedback loop. Only samples with status C{ok} and a C{ts} newer
than the last one taken in for that input count: replays, status changes and
out-of-order samples are dropped.

Inputs are converted to kW and °C first (L{hvac_push.analytics.units}), and a
unit's kind (L{hvac_push.analytics.equipment}) decides the sign of delta-T and
which efficiency figures apply. Formulas, units, gap handling and settings:
docs/derived.md.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar
from zoneinfo import ZoneInfo

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from hvac_push.analytics import equipment
from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.core.follow import HubFollower
from hvac_push.analytics.forecast import DampedHolt, Forecaster, HoltParams
from hvac_push.analytics.forecast_skill import SkillGate
from hvac_push.core.hub import Hub
from hvac_push.core.points import SEVERITIES, AlarmLimits, Point, Sample, Value
from hvac_push.analytics.units import INPUT_QUANTITIES, Conversion, UnitError, conversion

_log = Logger()

#: kW of heat removed by one ton of refrigeration.
KW_PER_TON = 3.51685
SITE_UNIT = "site"

# -- the schedule grammar (text periods here, and the plant file's period tables) --

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_RANGE = re.compile(r"^([a-z]{3})(?:-([a-z]{3}))?$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
#: One text period: C{DAY[-DAY] HH:MM-HH:MM}.
_PERIOD = re.compile(r"^\s*([a-z]{3}(?:-[a-z]{3})?)\s+(\d{1,2}:\d{2})-(\d{1,2}:\d{2})\s*$")


def parse_days(text: str) -> tuple[int, int] | None:
    """C{"mon"}, C{"mon-fri"} or C{"daily"} as C{(first, last)}, Monday = 0; L{None} if it is none of these.

    A range that runs backwards (C{"fri-mon"}) comes back as it is, C{last < first}, for the caller to refuse.
    """
    if text == "daily":
        return 0, 6
    match = _DAY_RANGE.match(text)
    if match is None or match.group(1) not in WEEKDAYS or (match.group(2) or "mon") not in WEEKDAYS:
        return None
    first = WEEKDAYS.index(match.group(1))
    return first, WEEKDAYS.index(match.group(2)) if match.group(2) else first


def parse_clock(text: str) -> float | None:
    """C{"HH:MM"}, from C{00:00} to C{24:00} (midnight at the end of the day), as hours; L{None} otherwise."""
    match = _CLOCK.match(text)
    if match is None or int(match.group(2)) > 59 or int(match.group(1)) * 60 + int(match.group(2)) > 24 * 60:
        return None
    return int(match.group(1)) + int(match.group(2)) / 60.0


@dataclass(frozen=True, slots=True)
class Schedule:
    """Weekly occupied hours: C{(weekday, start hour, end hour)} periods, Monday = 0.

    Build one with L{Schedule.parse}: C{"mon-fri 06:00-20:00; sat 08:00-12:00"},
    or C{"always"}. A period ends at its end hour (exclusive); C{24:00} is midnight.
    """

    periods: tuple[tuple[int, float, float], ...]

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        if text.strip().lower() == "always":
            return cls(tuple((day, 0.0, 24.0) for day in range(7)))
        periods: list[tuple[int, float, float]] = []
        for part in text.lower().split(";"):
            if not part.strip():
                continue
            match = _PERIOD.match(part)
            days = parse_days(match.group(1)) if match is not None else None
            if match is None or days is None:
                raise ValueError(f"bad schedule period {part.strip()!r}: expected e.g. 'mon-fri 06:00-20:00'")
            (first, last), start, end = days, parse_clock(match.group(2)), parse_clock(match.group(3))
            if start is None or end is None or not start < end or last < first:
                raise ValueError(f"bad schedule period {part.strip()!r}: times or days out of order")
            periods.extend((day, start, end) for day in range(first, last + 1))
        return cls(tuple(periods))

    def contains(self, moment: datetime) -> bool:
        hour = moment.hour + moment.minute / 60.0 + moment.second / 3600.0
        day = moment.weekday()
        return any(d == day and start <= hour < end for d, start, end in self.periods)


@dataclass(frozen=True, slots=True)
class Zone:
    """A zone served by a heating and a cooling source, to catch both working at once.

    Each input is active when it is C{True}, or a number above its threshold
    (a valve or output in %, a power in kW). The derived point is
    C{<site>/<name>/simultaneous_heat_cool}.
    """

    name: str
    heating: str
    cooling: str
    site: str = "plant"
    heating_threshold: float = 0.0
    cooling_threshold: float = 0.0


_V = TypeVar("_V")


class FrozenMapping(Mapping[str, _V], Generic[_V]):
    """A read-only mapping that hashes, so settings holding one (schedules, kinds) are values."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, _V] | None = None):
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> _V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"


class Schedules(FrozenMapping[Schedule]):
    """Schedules by C{"site/unit"} or C{"unit"}."""

    __slots__ = ()


#: The metadata key of the L{DerivedSettings} fields that a config file may set (L{configurable}).
CONFIGURABLE = "configurable"


def configurable(default: Any, **accepts: Any) -> Any:
    """A settings field that a config file may set, and the values it accepts there.

    C{accepts} holds C{low}, C{high} and C{positive} (greater than 0) for a number,
    C{max_len} and C{allow_empty} for a text, C{choices} for one of a few words. The
    plant file's C{[derived]} table (L{hvac_push.ops.plant_file}) takes its keys, checks and
    defaults from these fields, so a new setting is one field here.
    """
    return field(default=default, metadata={CONFIGURABLE: accepts})


@dataclass(frozen=True, slots=True)
class DerivedSettings:
    """What L{DerivedPoints} computes and how; every field has a default (docs/derived.md).

    The C{configurable} fields are the keys of the plant file's C{[derived]} table.
    """

    #: Forecast horizons in minutes; one C{<id>.forecast_<N>m} point each.
    forecast_minutes: tuple[int, ...] = configurable((5, 15, 30))
    forecast: HoltParams = HoltParams()
    #: Seconds between the forecasts kept to learn the deviation gains (L{Forecaster}).
    forecast_learn_every: float = 30.0
    #: The faster, undamped smoother behind C{minutes_to_limit}: an excursion towards a
    #: limit must show within a minute or two, which the forecast's long time constants
    #: (tuned for 5-30 minute accuracy) would hide.
    limit_trend: HoltParams = HoltParams(tau_level=60.0, tau_trend=300.0, tau_damp=1e9)
    #: C{minutes_to_limit} is capped here: this value means "not within the look-ahead".
    limit_lookahead_min: float = 120.0
    #: A C{predicted} alarm is raised when a limit is this many minutes away or less...
    predict_within_min: float = configurable(15.0, low=0, high=1440)
    #: ...and cleared when it is more than this factor times further (hysteresis).
    predict_clear_factor: float = 1.5
    #: Energy: a silence between two power samples longer than this is not integrated.
    energy_max_gap: float = configurable(300.0, low=0, high=86400, positive=True)
    #: Currency per kWh, and the currency's code (the unit of C{energy_cost}).
    tariff: float = configurable(0.15, low=0, high=1000)
    currency: str = configurable("EUR", max_len=16, allow_empty=False)
    #: COP and kW/ton average load and power over about this many seconds.
    cop_window: float = configurable(900.0, low=0, high=86400, positive=True)
    #: Below this averaged power (kW) no COP is published (the unit is off).
    cop_min_power: float = configurable(0.5, low=0, high=100000)
    #: More compressor starts than this in the last hour is short-cycling.
    max_starts_per_hour: float = configurable(6.0, low=0, high=3600)
    #: Weekly schedules, by C{"site/unit"} or C{"unit"}; units without one get no C{outside_schedule}.
    #: Any mapping may be given; it is kept as L{Schedules}.
    schedules: Mapping[str, Schedule] = configurable(Schedules())
    #: A unit is running when its compressor is on or its power is above this (kW).
    running_kw: float = configurable(1.0, low=0, high=100000)
    #: IANA time zone for schedules (e.g. "Europe/Paris"); None: the server's local time.
    timezone: str | None = configurable(None)
    zones: tuple[Zone, ...] = configurable(())
    #: Severity of C{predicted} and C{short_cycling} alarms.
    severity: str = configurable("warning", choices=SEVERITIES)
    #: Equipment kinds (L{equipment.KINDS}) by C{"site/unit"} or C{"unit"}; others are read from the unit's name.
    kinds: Mapping[str, str] = FrozenMapping()
    #: Publish a forecast only while its rolling measured skill beats the baselines (L{SkillGate});
    #: C{False}: every forecast from the first sample, as before the gate (docs/derived.md).
    forecast_gate: bool = configurable(True)
    #: The period of the C{cycle} baseline (same time of the previous cycle), in seconds.
    forecast_cycle: float = configurable(86400.0, low=0, high=366 * 86400, positive=True)

    def __post_init__(self) -> None:
        if not isinstance(self.schedules, Schedules):
            object.__setattr__(self, "schedules", Schedules(self.schedules))
        if not isinstance(self.kinds, FrozenMapping):
            object.__setattr__(self, "kinds", FrozenMapping(self.kinds))
        if not self.forecast_minutes or any(
            isinstance(m, bool) or not isinstance(m, int) or m <= 0 for m in self.forecast_minutes
        ):
            raise ValueError("forecast_minutes must be positive whole minutes")
        for name in ("energy_max_gap", "cop_window", "limit_lookahead_min", "forecast_learn_every"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.tariff < 0 or self.predict_within_min < 0 or self.max_starts_per_hour < 0:
            raise ValueError("tariff, predict_within_min and max_starts_per_hour must not be negative")
        if self.timezone is not None:
            ZoneInfo(self.timezone)  # raises for an unknown zone


def simulator_settings(unit_names: list[str] | None = None, **overrides: object) -> DerivedSettings:
    """Defaults for the built-in simulator (see docs/derived.md).

    Its compressors modulate and keep real anti-recycle timers, so the usual
    short-cycling limit (6 starts per hour) applies. Chillers and CRAC units run
    around the clock; air handlers are scheduled for office hours, so
    C{outside_schedule} has something to show at night and at weekends.
    """
    values: dict[str, object] = {"schedules": simulator_schedules(unit_names or [])}
    values.update(overrides)
    return DerivedSettings(**values)  # type: ignore[arg-type]


def simulator_schedules(unit_names: list[str], site: str | None = None) -> dict[str, Schedule]:
    """The simulator's schedules: air handlers C{mon-fri 06:00-20:00}, every other unit C{always}.

    Keyed by unit name, or by C{"site/unit"} when C{site} is given.
    """
    office, always = Schedule.parse("mon-fri 06:00-20:00"), Schedule.parse("always")
    prefix = f"{site}/" if site is not None else ""
    return {f"{prefix}{name}": office if name.startswith("ahu") else always for name in unit_names}


def _number(value: Value | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _active(value: Value | None, threshold: float) -> bool | None:
    if isinstance(value, bool):
        return value
    number = _number(value)
    return None if number is None else number > threshold


def split_trapezoid(kw0: float, kw1: float, seconds: float) -> tuple[float, float]:
    """The kWh drawn and the kWh exported over a straight line from C{kw0} to C{kw1}.

    Power above zero is drawn, below zero exported; a segment that crosses zero
    is cut where it crosses, so each total gets only its own area and neither
    ever goes down.
    """
    hours = seconds / 3600.0
    if kw0 >= 0.0 and kw1 >= 0.0:
        return (kw0 + kw1) / 2.0 * hours, 0.0
    if kw0 <= 0.0 and kw1 <= 0.0:
        return 0.0, -(kw0 + kw1) / 2.0 * hours
    crossing = kw0 / (kw0 - kw1)  # fraction of the segment before power crosses zero
    first, second = kw0 / 2.0 * crossing * hours, kw1 / 2.0 * (1.0 - crossing) * hours
    return (first, -second) if kw0 > 0.0 else (second, -first)


class _Energy:
    """Trapezoid integration of one kW series: its running totals (drawn and exported) and cost."""

    __slots__ = ("kwh", "cost", "ts", "kw", "export_kwh")

    def __init__(self, kwh: float = 0.0, cost: float = 0.0, ts: float | None = None, kw: float | None = None):
        self.kwh = kwh
        self.cost = cost
        #: The last sample integrated (or, after a restart, the ts the total was stored at).
        self.ts = ts
        self.kw = kw
        #: Energy exported (power below zero); None until the first export is seen.
        self.export_kwh: float | None = None


class _Ewma:
    """Time-weighted exponential average of an irregularly sampled series."""

    __slots__ = ("value", "ts", "since")

    def __init__(self) -> None:
        self.value: float | None = None
        self.ts: float | None = None
        #: When the current unbroken run of samples began (a gap starts a new one).
        self.since: float | None = None

    def covers(self, seconds: float) -> bool:
        """Whether the average rests on at least C{seconds} of unbroken data."""
        return self.since is not None and self.ts is not None and self.ts - self.since >= seconds

    def update(self, ts: float, x: float, tau: float, max_gap: float) -> bool:
        if self.ts is not None and ts <= self.ts:
            return False
        if self.value is None or self.ts is None or ts - self.ts > max_gap:
            self.value = x
            self.since = ts
        else:
            self.value += (x - self.value) * (1.0 - math.exp(-(ts - self.ts) / tau))
        self.ts = ts
        return True


class _Unit:
    """Per-unit state for everything derived from more than one point."""

    __slots__ = (
        "supply", "return_", "load", "power", "compressor", "compressor_ts", "starts",
        "power_kw", "running_ts", "published", "starts_total", "kind", "heat_mode",
    )

    def __init__(self, kind: str = equipment.UNKNOWN) -> None:
        self.supply: tuple[float, float] | None = None  # (ts, °C)
        self.return_: tuple[float, float] | None = None
        self.load = _Ewma()
        self.power = _Ewma()
        self.compressor: bool | None = None
        self.compressor_ts: float | None = None
        self.starts: deque[float] = deque()
        self.power_kw: float | None = None
        self.running_ts: float | None = None
        #: Last value published per derived name, to publish booleans and counts only on change.
        self.published: dict[str, Value] = {}
        #: Compressor starts ever counted: a running total, continued across restarts from the hub.
        self.starts_total = 0
        #: What the unit is (L{equipment.KINDS}), and a heat pump's mode when it publishes one.
        self.kind = kind
        self.heat_mode: bool | None = None


class DerivedPoints:
    """Computes derived points from the hub's changes and publishes them into the hub.

    C{alarms}, when given, receives C{predicted} and C{short_cycling}
    conditions (L{AlarmEngine.predict}) and supplies limits (L{AlarmEngine.limits_for});
    without it limits come from C{hub.meta} and no alarm is raised.
    """

    def __init__(
        self,
        hub: Hub,
        clock: IReactorTime,
        settings: DerivedSettings = DerivedSettings(),
        alarms: AlarmEngine | None = None,
        publish: Callable[[Sequence[Sample]], object] | None = None,
    ):
        self.hub = hub
        #: Where derived samples go (the hub by default, which applies them
        #: after the notification that produced them, never inside it).
        self._publish: Callable[[Sequence[Sample]], object] = publish or hub.publish_many
        self.clock = clock
        self.settings = settings
        self.alarms = alarms
        #: Every id this object has published: never an input.
        self.own: set[str] = set()
        #: Input samples dropped as not newer than the last one taken in.
        self.dropped = 0
        #: Input samples refused because their unit is not one of the input's quantity.
        self.refused = 0
        #: Per input point: the unit string last seen and its conversion (None: refused).
        self._conversions: dict[str, tuple[str, Conversion | None]] = {}
        self._tz: tzinfo | None = ZoneInfo(settings.timezone) if settings.timezone else None
        self._horizons = tuple(60.0 * m for m in settings.forecast_minutes)
        self._forecasters: dict[str, Forecaster] = {}
        self._gates: dict[str, SkillGate] = {}
        #: Gated forecast ids currently published as earning their place.
        self._earning: set[str] = set()
        #: The skill last published per C{<forecast id>_skill} point.
        self._skills: dict[str, float] = {}
        self._trackers: dict[str, DampedHolt] = {}
        self._predicted: dict[str, bool] = {}
        self._energy: dict[str, _Energy] = {}
        self._site_energy: dict[str, _Energy] = {}
        self._units: dict[str, _Unit] = {}
        self._zones: dict[str, list[Zone]] = {}
        self._zone_state: dict[Zone, dict[str, bool]] = {}
        self._zone_published: dict[Zone, bool] = {}
        for zone in settings.zones:
            self._zones.setdefault(zone.heating, []).append(zone)
            self._zones.setdefault(zone.cooling, []).append(zone)
            self._zone_state[zone] = {}
        self._out: list[Sample] = []
        self._seed_energy()
        self._follower = HubFollower(hub, self._take)
        hub.add_listener(self._flush)
        for point in hub.points():
            self._take(point)
        self._flush()

    def close(self) -> None:
        self._follower.close()
        self.hub.remove_listener(self._flush)

    def release_alarms(self, successor: DerivedPoints | None = None) -> None:
        """After L{close}: clear the C{predicted} and C{short_cycling} alarms this object raised.

        Those that C{successor} (the object replacing this one, which has already
        seen the current inputs) holds itself are left to it; a replacement leaves
        no alarm stuck, and the successor raises them again when its own history shows them.
        """
        if self.alarms is None:
            return
        for point_id, on in self._predicted.items():
            if on and not (successor is not None and successor._predicted.get(point_id)):
                self.alarms.predict(
                    point_id, False, f"{point_id}: derived points reconfigured", severity=self.settings.severity
                )
        for key, state in self._units.items():
            short = f"{key}/short_cycling"
            if state.published.get(short) is not True:
                continue
            other = successor._units.get(key) if successor is not None else None
            if other is None or other.published.get(short) is not True:
                self.alarms.predict(
                    f"{key}/compressor", False, f"{key}: derived points reconfigured",
                    kind="short_cycling", limit=self.settings.max_starts_per_hour, severity=self.settings.severity,
                )

    # -- plumbing ---------------------------------------------------------------

    def _emit(self, point_id: str, value: Value, unit: str, ts: float) -> None:
        self.own.add(point_id)
        self._out.append(Sample(point_id, value, unit, ts))

    def _flush(self) -> None:
        if self._out:
            out, self._out = self._out, []
            self._publish(out)

    def _take(self, point: Point) -> None:
        point_id = point.point_id
        if point_id in self.own or point.status != "ok":
            return
        site, unit, name = point_id.split("/")
        if "." in name:
            return
        for zone in self._zones.get(point_id, ()):
            self._zone(zone, point)
        if name.endswith("_temp"):
            self._temperature(point, site, unit, name)
        elif name == "power":
            self._power(point, site, unit)
        elif name == "load":
            self._load(point, site, unit)
        elif name == "compressor":
            self._compressor(point, site, unit)
        elif name == "mode" and point.value is not None:
            self._unit(site, unit).heat_mode = equipment.heating_mode(point.value)

    def _unit(self, site: str, unit: str) -> _Unit:
        key = f"{site}/{unit}"
        state = self._units.get(key)
        if state is None:
            state = self._units[key] = _Unit(equipment.kind_of(site, unit, self.settings.kinds))
        return state

    def _canonical(self, point: Point, name: str) -> float | None:
        """The sample's value in the canonical unit of its input (kW, °C); None if it has none.

        The unit string is parsed once per point (again only if it changes); a unit of
        the wrong kind is logged once per point and its samples are refused.
        """
        value = _number(point.value)
        if value is None:
            return None
        cached = self._conversions.get(point.point_id)
        if cached is None or cached[0] != point.unit:
            converter: Conversion | None
            try:
                converter = conversion(point.unit, INPUT_QUANTITIES[name])
            except UnitError as error:
                converter = None
                _log.warn(
                    "derived points: {point} refused as an input: {why}", point=point.point_id, why=str(error)
                )
            cached = self._conversions[point.point_id] = (point.unit, converter)
        if cached[1] is None:
            self.refused += 1
            return None
        return cached[1](value)

    def _changed(self, state: _Unit, point_id: str, value: Value, unit: str, ts: float) -> None:
        """Publish a boolean or count only when it differs from what was last published."""
        if state.published.get(point_id) == value and point_id in state.published:
            return
        state.published[point_id] = value
        self._emit(point_id, value, unit, ts)

    # -- forecasts ----------------------------------------------------------------

    def _limits(self, point_id: str) -> AlarmLimits | None:
        if self.alarms is not None:
            return self.alarms.limits_for(point_id)
        meta = self.hub.meta.get(point_id)
        return meta.limits if meta is not None else None

    def _temperature(self, point: Point, site: str, unit: str, name: str) -> None:
        value = _number(point.value)
        if value is None:
            return
        celsius: float | None = None
        if name in INPUT_QUANTITIES:
            celsius = self._canonical(point, name)
            if celsius is None:
                return
        point_id = point.point_id
        forecaster = self._forecasters.get(point_id)
        if forecaster is None:
            forecaster = self._forecasters[point_id] = Forecaster(
                self._horizons, self.settings.forecast, learn_every=self.settings.forecast_learn_every
            )
        if not forecaster.update(point.ts, value):
            self.dropped += 1
            return
        if self.settings.forecast_gate:
            self._gated_forecasts(point, value, forecaster)
        else:
            for minutes, horizon in zip(self.settings.forecast_minutes, self._horizons):
                self._emit(f"{point_id}.forecast_{minutes}m", round(forecaster.forecast(horizon), 3), point.unit, point.ts)
        tracker = self._trackers.get(point_id)
        if tracker is None:
            tracker = self._trackers[point_id] = DampedHolt(self.settings.limit_trend)
        tracker.update(point.ts, value)
        self._limit(point, value, tracker)
        if celsius is not None:
            self._delta_t(point, site, unit, name, celsius)

    def _delta_t(self, point: Point, site: str, unit: str, name: str, celsius: float) -> None:
        """Return minus supply for cooling kinds, supply minus return for heating; both in °C first, so in K."""
        state = self._unit(site, unit)
        if not equipment.applies(state.kind, "delta_t"):
            return
        if name == "supply_temp":
            state.supply = (point.ts, celsius)
        else:
            state.return_ = (point.ts, celsius)
        if state.supply is not None and state.return_ is not None:
            ts = max(state.supply[0], state.return_[0])
            rise = state.return_[1] - state.supply[1]
            if equipment.heating(state.kind, state.heat_mode):
                rise = -rise
            self._emit(f"{site}/{unit}/delta_t", round(rise, 3), "K", ts)

    def _gated_forecasts(self, point: Point, value: float, forecaster: Forecaster) -> None:
        """Publish each horizon's forecast only while its measured skill beats every baseline (L{SkillGate}).

        A forecast that stops earning its place is published once more with status C{stale}.
        """
        point_id = point.point_id
        gate = self._gates.get(point_id)
        if gate is None:
            gate = self._gates[point_id] = SkillGate(
                self._horizons, cycle=self.settings.forecast_cycle, every=self.settings.forecast_learn_every
            )
        forecasts = [forecaster.forecast(horizon) for horizon in self._horizons]
        gate.update(point.ts, value, forecasts)
        for index, minutes in enumerate(self.settings.forecast_minutes):
            forecast_id = f"{point_id}.forecast_{minutes}m"
            skill = gate.skill(index)
            if skill is not None:
                # The rolling score beside the forecast, published whether it earns its place or not.
                skill_id, rounded = f"{forecast_id}_skill", round(skill, 3)
                if self._skills.get(skill_id) != rounded:
                    self._skills[skill_id] = rounded
                    self._emit(skill_id, rounded, "", point.ts)
            if gate.earns(index):
                self._earning.add(forecast_id)
                self._emit(forecast_id, round(forecasts[index], 3), point.unit, point.ts)
            elif forecast_id in self._earning:
                self._earning.discard(forecast_id)
                self._out.append(Sample(forecast_id, round(forecasts[index], 3), point.unit, point.ts, "stale"))

    def _limit(self, point: Point, value: float, holt: DampedHolt) -> None:
        limits = self._limits(point.point_id)
        if limits is None or (limits.high is None and limits.low is None):
            return
        cap = self.settings.limit_lookahead_min
        minutes = cap
        crossing: float | None = None
        for limit, above in ((limits.high, True), (limits.low, False)):
            if limit is None:
                continue
            if (holt.level >= limit) if above else (holt.level <= limit):
                seconds: float | None = 0.0
            else:
                seconds = holt.seconds_to(limit)
            if seconds is not None and seconds / 60.0 < minutes:
                minutes, crossing = seconds / 60.0, limit
        self._emit(f"{point.point_id}.minutes_to_limit", round(minutes, 2), "min", point.ts)
        if self.alarms is None:
            return
        beyond = (limits.high is not None and value > limits.high) or (limits.low is not None and value < limits.low)
        was_on = self._predicted.get(point.point_id, False)
        within = self.settings.predict_within_min * (self.settings.predict_clear_factor if was_on else 1.0)
        on = crossing is not None and minutes <= within and not beyond
        if on == was_on:
            return
        self._predicted[point.point_id] = on
        message = (
            f"{point.point_id} expected to reach {crossing:g} in {minutes:.0f} min" if crossing is not None
            else f"{point.point_id} no longer expected to reach its limit"
        )
        self.alarms.predict(point.point_id, on, message, limit=crossing, severity=self.settings.severity)

    # -- energy -------------------------------------------------------------------

    def _seed_energy(self) -> None:
        """Continue the totals already in the hub (a restarted or replaced DerivedPoints, or a store's last values)."""
        for point in self.hub.points():
            site, unit, name = point.point_id.split("/")
            if name == "compressor_starts" and isinstance(point.value, int) and not isinstance(point.value, bool):
                self._unit(site, unit).starts_total = point.value
                continue
            kwh = _number(point.value)
            if name != "energy_kwh" or kwh is None:
                continue
            cost_point = self.hub.get(f"{site}/{unit}/energy_cost")
            cost = _number(cost_point.value) if cost_point is not None else None
            state = _Energy(kwh, cost or 0.0, point.ts)
            if unit == SITE_UNIT:
                self._site_energy[site] = state
                continue
            export = self.hub.get(f"{site}/{unit}/energy_export_kwh")
            state.export_kwh = _number(export.value) if export is not None else None
            power = self.hub.get(f"{site}/{unit}/power")
            if power is not None and power.ts == point.ts:
                state.kw = self._canonical(power, "power")
            self._energy[f"{site}/{unit}"] = state

    def _power(self, point: Point, site: str, unit: str) -> None:
        kw = self._canonical(point, "power")
        if kw is None:
            return
        key = f"{site}/{unit}"
        energy = self._energy.get(key)
        if energy is None:
            energy = self._energy[key] = _Energy()
        if energy.ts is not None and point.ts <= energy.ts:
            self.dropped += 1
            return
        added = exported = 0.0
        if energy.ts is not None and energy.kw is not None and point.ts - energy.ts <= self.settings.energy_max_gap:
            added, exported = split_trapezoid(energy.kw, kw, point.ts - energy.ts)
        energy.ts, energy.kw = point.ts, kw
        energy.kwh += added
        energy.cost += added * self.settings.tariff
        self._emit(f"{key}/energy_kwh", round(energy.kwh, 6), "kWh", point.ts)
        self._emit(f"{key}/energy_cost", round(energy.cost, 6), self.settings.currency, point.ts)
        if kw < 0.0 or energy.export_kwh is not None:
            energy.export_kwh = (energy.export_kwh or 0.0) + exported
            self._emit(f"{key}/energy_export_kwh", round(energy.export_kwh, 6), "kWh", point.ts)
        site_energy = self._site_energy.get(site)
        if site_energy is None:
            site_energy = self._site_energy[site] = _Energy()
        site_energy.kwh += added
        site_energy.cost += added * self.settings.tariff
        # The site total is stamped with the newest ts it includes, so it never goes back in time.
        site_energy.ts = point.ts if site_energy.ts is None else max(site_energy.ts, point.ts)
        self._emit(f"{site}/{SITE_UNIT}/energy_kwh", round(site_energy.kwh, 6), "kWh", site_energy.ts)
        self._emit(f"{site}/{SITE_UNIT}/energy_cost", round(site_energy.cost, 6), self.settings.currency, site_energy.ts)
        state = self._unit(site, unit)
        if state.power.update(point.ts, kw, self.settings.cop_window, self.settings.energy_max_gap):
            self._cop(state, site, unit, point.ts)
        state.power_kw = kw
        self._schedule(state, site, unit, point.ts)

    # -- efficiency ---------------------------------------------------------------

    def _load(self, point: Point, site: str, unit: str) -> None:
        kw = self._canonical(point, "load")
        if kw is None:
            return
        state = self._unit(site, unit)
        if not state.load.update(point.ts, kw, self.settings.cop_window, self.settings.energy_max_gap):
            self.dropped += 1
            return
        self._cop(state, site, unit, point.ts)

    def _cop(self, state: _Unit, site: str, unit: str, ts: float) -> None:
        """COP and kW/ton, once both averages rest on a full C{cop_window} of unbroken data."""
        load, power = state.load.value, state.power.value
        if load is None or power is None or power < self.settings.cop_min_power or load <= 0:
            return
        window = self.settings.cop_window
        if not (state.load.covers(window) and state.power.covers(window)):
            return
        if not equipment.applies(state.kind, "cop"):
            return
        cop = load / power
        self._emit(f"{site}/{unit}/cop", round(cop, 3), "", ts)
        if equipment.applies(state.kind, "kw_per_ton") and not equipment.heating(state.kind, state.heat_mode):
            self._emit(f"{site}/{unit}/kw_per_ton", round(KW_PER_TON / cop, 3), "kW/ton", ts)

    # -- equipment health ---------------------------------------------------------

    def _compressor(self, point: Point, site: str, unit: str) -> None:
        on = _active(point.value, 0.5)
        if on is None:
            return
        state = self._unit(site, unit)
        if state.compressor_ts is not None and point.ts <= state.compressor_ts:
            self.dropped += 1
            return
        if state.compressor is False and on:
            state.starts.append(point.ts)
            state.starts_total += 1
        state.compressor, state.compressor_ts = on, point.ts
        while state.starts and state.starts[0] <= point.ts - 3600.0:
            state.starts.popleft()
        count = len(state.starts)
        short = count > self.settings.max_starts_per_hour
        self._changed(state, f"{site}/{unit}/starts_per_hour", count, "1/h", point.ts)
        self._changed(state, f"{site}/{unit}/compressor_starts", state.starts_total, "", point.ts)
        before = state.published.get(f"{site}/{unit}/short_cycling")
        self._changed(state, f"{site}/{unit}/short_cycling", short, "", point.ts)
        if self.alarms is not None and before != short:
            self.alarms.predict(
                point.point_id, short,
                f"{site}/{unit} compressor started {count} times in an hour (limit {self.settings.max_starts_per_hour:g})",
                kind="short_cycling", limit=self.settings.max_starts_per_hour, severity=self.settings.severity,
            )
        self._schedule(state, site, unit, point.ts)

    def _schedule(self, state: _Unit, site: str, unit: str, ts: float) -> None:
        schedules = self.settings.schedules
        schedule = schedules.get(f"{site}/{unit}") or schedules.get(unit)
        if schedule is None:
            return
        if state.running_ts is not None and ts < state.running_ts:
            return
        state.running_ts = ts
        running = bool(state.compressor) or (state.power_kw is not None and state.power_kw > self.settings.running_kw)
        outside = running and not schedule.contains(datetime.fromtimestamp(ts, tz=self._tz))
        self._changed(state, f"{site}/{unit}/outside_schedule", outside, "", ts)

    def _zone(self, zone: Zone, point: Point) -> None:
        active = _active(point.value, zone.heating_threshold if point.point_id == zone.heating else zone.cooling_threshold)
        if active is None:
            return
        state = self._zone_state[zone]
        state["heating" if point.point_id == zone.heating else "cooling"] = active
        both = state.get("heating", False) and state.get("cooling", False)
        if self._zone_published.get(zone) is both:
            return
        self._zone_published[zone] = both
        self._emit(f"{zone.site}/{zone.name}/simultaneous_heat_cool", both, "", point.ts)
