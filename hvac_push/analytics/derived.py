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

Formulas, gap handling and settings: docs/derived.md.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Mapping
from zoneinfo import ZoneInfo

from twisted.internet.interfaces import IReactorTime

from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.core.follow import HubFollower
from hvac_push.analytics.forecast import DampedHolt, Forecaster, HoltParams
from hvac_push.core.hub import Hub
from hvac_push.core.points import AlarmLimits, Point, Sample, Value

#: kW of heat removed by one ton of refrigeration.
KW_PER_TON = 3.51685
SITE_UNIT = "site"
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PERIOD = re.compile(r"^\s*([a-z]{3})(?:-([a-z]{3}))?\s+(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})\s*$")


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
            if match is None or match.group(1) not in _DAYS or (match.group(2) or "mon") not in _DAYS:
                raise ValueError(f"bad schedule period {part.strip()!r}: expected e.g. 'mon-fri 06:00-20:00'")
            first = _DAYS.index(match.group(1))
            last = _DAYS.index(match.group(2)) if match.group(2) else first
            start = int(match.group(3)) + int(match.group(4)) / 60.0
            end = int(match.group(5)) + int(match.group(6)) / 60.0
            if not 0.0 <= start < end <= 24.0 or last < first:
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


@dataclass(frozen=True, slots=True)
class DerivedSettings:
    """What L{DerivedPoints} computes and how; every field has a default."""

    #: Forecast horizons in minutes; one C{<id>.forecast_<N>m} point each.
    forecast_minutes: tuple[int, ...] = (5, 15, 30)
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
    predict_within_min: float = 15.0
    #: ...and cleared when it is more than this factor times further (hysteresis).
    predict_clear_factor: float = 1.5
    #: Energy: a silence between two power samples longer than this is not integrated.
    energy_max_gap: float = 300.0
    #: Currency per kWh, and the currency's code (the unit of C{energy_cost}).
    tariff: float = 0.15
    currency: str = "EUR"
    #: COP and kW/ton average load and power over about this many seconds.
    cop_window: float = 900.0
    #: Below this averaged power (kW) no COP is published (the unit is off).
    cop_min_power: float = 0.5
    #: More compressor starts than this in the last hour is short-cycling.
    max_starts_per_hour: float = 6.0
    #: Weekly schedules, by C{"site/unit"} or C{"unit"}; units without one get no C{outside_schedule}.
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    #: A unit is running when its compressor is on or its power is above this (kW).
    running_kw: float = 1.0
    #: IANA time zone for schedules (e.g. "Europe/Paris"); None: the server's local time.
    timezone: str | None = None
    zones: tuple[Zone, ...] = ()
    #: Severity of C{predicted} and C{short_cycling} alarms.
    severity: str = "warning"

    def __post_init__(self) -> None:
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

    The simulator compresses a day into ten minutes and its compressors cycle
    every minute or two, so real-kit limits would keep every alarm on: its
    short-cycling limit is 90 starts per hour. Chillers and CRAC units run
    around the clock; air handlers are scheduled for office hours, so
    C{outside_schedule} has something to show at night and at weekends.
    """
    values: dict[str, object] = {
        "max_starts_per_hour": SIMULATOR_MAX_STARTS_PER_HOUR, "schedules": simulator_schedules(unit_names or []),
    }
    values.update(overrides)
    return DerivedSettings(**values)  # type: ignore[arg-type]


#: The simulator's short-cycling limit (its compressors cycle about 60 times an hour).
SIMULATOR_MAX_STARTS_PER_HOUR = 90.0


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


class _Energy:
    """Trapezoid integration of one kW series, with its running total and cost."""

    __slots__ = ("kwh", "cost", "ts", "kw")

    def __init__(self, kwh: float = 0.0, cost: float = 0.0, ts: float | None = None, kw: float | None = None):
        self.kwh = kwh
        self.cost = cost
        #: The last sample integrated (or, after a restart, the ts the total was stored at).
        self.ts = ts
        self.kw = kw


class _Ewma:
    """Time-weighted exponential average of an irregularly sampled series."""

    __slots__ = ("value", "ts")

    def __init__(self) -> None:
        self.value: float | None = None
        self.ts: float | None = None

    def update(self, ts: float, x: float, tau: float, max_gap: float) -> bool:
        if self.ts is not None and ts <= self.ts:
            return False
        if self.value is None or self.ts is None or ts - self.ts > max_gap:
            self.value = x
        else:
            self.value += (x - self.value) * (1.0 - math.exp(-(ts - self.ts) / tau))
        self.ts = ts
        return True


class _Unit:
    """Per-unit state for everything derived from more than one point."""

    __slots__ = (
        "supply", "return_", "load", "power", "compressor", "compressor_ts", "starts",
        "power_kw", "running_ts", "published",
    )

    def __init__(self) -> None:
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
    ):
        self.hub = hub
        self.clock = clock
        self.settings = settings
        self.alarms = alarms
        #: Every id this object has published: never an input.
        self.own: set[str] = set()
        #: Input samples dropped as not newer than the last one taken in.
        self.dropped = 0
        self._tz: tzinfo | None = ZoneInfo(settings.timezone) if settings.timezone else None
        self._horizons = tuple(60.0 * m for m in settings.forecast_minutes)
        self._forecasters: dict[str, Forecaster] = {}
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
            self.hub.publish_many(out)

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

    def _unit(self, site: str, unit: str) -> _Unit:
        key = f"{site}/{unit}"
        state = self._units.get(key)
        if state is None:
            state = self._units[key] = _Unit()
        return state

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
        point_id = point.point_id
        forecaster = self._forecasters.get(point_id)
        if forecaster is None:
            forecaster = self._forecasters[point_id] = Forecaster(
                self._horizons, self.settings.forecast, learn_every=self.settings.forecast_learn_every
            )
        if not forecaster.update(point.ts, value):
            self.dropped += 1
            return
        for minutes, horizon in zip(self.settings.forecast_minutes, self._horizons):
            self._emit(f"{point_id}.forecast_{minutes}m", round(forecaster.forecast(horizon), 3), point.unit, point.ts)
        tracker = self._trackers.get(point_id)
        if tracker is None:
            tracker = self._trackers[point_id] = DampedHolt(self.settings.limit_trend)
        tracker.update(point.ts, value)
        self._limit(point, value, tracker)
        if name in ("supply_temp", "return_temp"):
            state = self._unit(site, unit)
            if name == "supply_temp":
                state.supply = (point.ts, value)
            else:
                state.return_ = (point.ts, value)
            if state.supply is not None and state.return_ is not None:
                ts = max(state.supply[0], state.return_[0])
                self._emit(f"{site}/{unit}/delta_t", round(state.return_[1] - state.supply[1], 3), "K", ts)

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
        """Continue the totals already in the hub (a restarted or replaced DerivedPoints)."""
        for point in self.hub.points():
            site, unit, name = point.point_id.split("/")
            kwh = _number(point.value)
            if name != "energy_kwh" or kwh is None:
                continue
            cost_point = self.hub.get(f"{site}/{unit}/energy_cost")
            cost = _number(cost_point.value) if cost_point is not None else None
            state = _Energy(kwh, cost or 0.0, point.ts)
            if unit == SITE_UNIT:
                self._site_energy[site] = state
                continue
            power = self.hub.get(f"{site}/{unit}/power")
            if power is not None and power.ts == point.ts:
                state.kw = _number(power.value)
            self._energy[f"{site}/{unit}"] = state

    def _power(self, point: Point, site: str, unit: str) -> None:
        kw = _number(point.value)
        if kw is None:
            return
        key = f"{site}/{unit}"
        energy = self._energy.get(key)
        if energy is None:
            energy = self._energy[key] = _Energy()
        if energy.ts is not None and point.ts <= energy.ts:
            self.dropped += 1
            return
        added = 0.0
        if energy.ts is not None and energy.kw is not None and point.ts - energy.ts <= self.settings.energy_max_gap:
            added = (energy.kw + kw) / 2.0 * (point.ts - energy.ts) / 3600.0
        energy.ts, energy.kw = point.ts, kw
        energy.kwh += added
        energy.cost += added * self.settings.tariff
        self._emit(f"{key}/energy_kwh", round(energy.kwh, 6), "kWh", point.ts)
        self._emit(f"{key}/energy_cost", round(energy.cost, 6), self.settings.currency, point.ts)
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
        kw = _number(point.value)
        if kw is None:
            return
        state = self._unit(site, unit)
        if not state.load.update(point.ts, kw, self.settings.cop_window, self.settings.energy_max_gap):
            self.dropped += 1
            return
        self._cop(state, site, unit, point.ts)

    def _cop(self, state: _Unit, site: str, unit: str, ts: float) -> None:
        load, power = state.load.value, state.power.value
        if load is None or power is None or power < self.settings.cop_min_power or load <= 0:
            return
        cop = load / power
        self._emit(f"{site}/{unit}/cop", round(cop, 3), "", ts)
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
        state.compressor, state.compressor_ts = on, point.ts
        while state.starts and state.starts[0] <= point.ts - 3600.0:
            state.starts.popleft()
        count = len(state.starts)
        short = count > self.settings.max_starts_per_hour
        self._changed(state, f"{site}/{unit}/starts_per_hour", count, "1/h", point.ts)
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
