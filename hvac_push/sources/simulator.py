"""A built-in plant simulator: the default data source when no equipment is configured.

The numbers have to *behave* like a plant, not like noise, so that dashboards,
alarms and trend charts can be demonstrated and tested against something
believable:

* each unit serves a heat load that drifts smoothly (a compressed "day" plus a
  slow, bounded random walk per unit);
* supply and return temperatures follow first-order thermal lags driven by the
  balance of that load against the cooling the unit delivers;
* compressors modulate their capacity (slide valve, digital scroll or VSD) from
  L{MIN_CAPACITY} to full under a PI loop on supply temperature, like real
  kit; they stop only when even minimum capacity over-cools, and they keep
  minimum on/off times and an anti-recycle timer (L{MIN_START_INTERVAL_S}), so
  no unit starts more than 6 times an hour;
* fans track load with a lag and a slew limit; electrical power follows the
  compressor's capacity (capacity / COP) and the fan affinity (cube) law.
* with C{faults=True} (the twistd demo's default), the first chiller loses
  most of its capacity on a schedule (L{FAULT_PERIOD_S}), so alarms can be seen.

L{PlantModel} is pure and deterministic for a given seed and sequence of
C{dt}; L{SimulatorProducer} is the thread-side driver that paces it in real
time and hands batches of L{Sample} to C{publish}.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from hvac_push.core.points import AlarmLimits, PointMeta, Sample, Value, check_point_id

# --- tuning knobs (seconds, °C, fractions) ---------------------------------------

#: Time constant of the supply side (coil / chilled-water loop thermal mass).
TAU_SUPPLY_S = 40.0
#: Time constant of the return side: the room or loop lags the supply.
TAU_RETURN_S = 60.0
#: Fan speed lag and slew limit, so a load step ramps the fan instead of jumping it.
TAU_FAN_S = 10.0
FAN_SLEW_PCT_PER_S = 2.0
FAN_MIN_PCT = 20.0
FAN_MAX_PCT = 100.0
#: Load fraction at which the fan reaches 100 %.
FAN_FULL_LOAD = 0.85
#: Compressor anti-short-cycle timers: no toggle sooner than this after the last one...
MIN_ON_S = 180.0
MIN_OFF_S = 120.0
#: ...and no start sooner than this after the previous start (anti-recycle): 6 starts per hour at most.
MIN_START_INTERVAL_S = 600.0
#: Capacity control: a running compressor delivers from this fraction of its capacity to all of it.
MIN_CAPACITY = 0.3
#: The PI loop from supply temperature error (°C) to capacity fraction: proportional, and per second.
CAPACITY_KP = 0.2
CAPACITY_KI = 0.005
#: A unit at minimum capacity stops once its supply is this far below setpoint (it cannot turn down further).
STOP_BELOW_C = 0.5
#: Supply temperature swing (°C) per unit of normalised heat imbalance (load - cooling) / capacity.
SUPPLY_GAIN_C = 6.0
#: Compressed "day": the plant-wide load sinusoid period, short enough to watch live.
LOAD_PERIOD_S = 600.0
LOAD_SWING = 0.25
BASE_LOAD_FRACTION = 0.55
LOAD_FRACTION_MIN = 0.10
LOAD_FRACTION_MAX = 0.95
#: Per-unit random walk: Ornstein-Uhlenbeck, then low-passed so it is smooth, then clamped.
WALK_TAU_S = 90.0
WALK_SIGMA = 0.08
WALK_SMOOTH_TAU_S = 20.0
WALK_LIMIT = 0.15
#: Physics sub-step: large dt is integrated in pieces so hysteresis is not skipped over.
MAX_SUBSTEP_S = 1.0
MAX_SUBSTEPS = 200

#: Demo faults (L{PlantModel} with C{faults=True}): the first chiller loses most of its
#: capacity for FAULT_DURATION_S every FAULT_PERIOD_S of plant time, first at FAULT_FIRST_S,
#: so its supply temperature drifts above the demo's 9 °C high limit for a few minutes.
FAULT_FIRST_S = 30.0
FAULT_PERIOD_S = 600.0
FAULT_DURATION_S = 180.0
FAULT_CAPACITY = 0.1

MAX_UNITS = 10_000
MAX_RATE = 1_000_000.0
#: The producer never sleeps less than this per slot; more rate means bigger batches.
MIN_SLOT_S = 0.01
#: Backlog beyond this is dropped instead of being emitted in a burst.
MAX_BACKLOG_S = 1.0
#: The producer steps the physics at most this often; the time constants are tens of
#: seconds, so stepping every 10 ms slot would cost CPU on big plants and add nothing.
PHYSICS_INTERVAL_S = 0.05
#: ...and, on plant-sized models (thousands of units), no more than this share of the time
#: in physics: a step of 7,000 units costs about 0.3 s, so it runs every few seconds there.
PHYSICS_SECONDS_PER_UNIT = 0.0005

POINTS: dict[str, str] = {
    "supply_temp": "°C",
    "return_temp": "°C",
    "setpoint": "°C",
    "fan_speed": "%",
    "compressor": "",
    "power": "kW",
    "load": "kW",
}


@dataclass(frozen=True, slots=True)
class _Kind:
    """Design data of one kind of cooling unit."""

    name: str
    setpoints: tuple[float, ...]  # one is picked per unit, for variety between units
    band: float  # hysteresis half-width around the setpoint, °C
    design_delta_t: float  # return - supply at design load and design flow, °C
    capacity_kw: float  # nominal cooling capacity with the compressor on
    cop: float  # nominal coefficient of performance
    fan_kw: float  # fan motor power at 100 %
    air_side: bool  # True: flow follows the fan; False: fixed-speed water pump


_KINDS: tuple[_Kind, ...] = (
    # Chilled water: 7 °C setpoint, 6-8 °C supply, ~12 °C return; condenser fans.
    _Kind("chiller", (7.0,), 1.0, 5.0, 700.0, 5.5, 18.0, air_side=False),
    # Computer-room unit: 18.5-19.5 °C supply air, ~27-29 °C hot-aisle return.
    _Kind("crac", (18.5, 19.0, 19.5), 1.0, 9.0, 90.0, 3.2, 5.5, air_side=True),
    # Air handler: 13-16 °C supply air, ~22-23 °C return.
    _Kind("ahu", (14.0, 14.5, 15.0), 1.0, 8.0, 160.0, 3.8, 15.0, air_side=True),
)

#: Fan speed (and so air flow) at the design load; the design delta-T holds there.
_DESIGN_FAN_PCT = 100.0 * BASE_LOAD_FRACTION / FAN_FULL_LOAD


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _approach(h: float, tau: float) -> float:
    """Fraction of the way a first-order lag moves towards its target in C{h} seconds.

    Exact for a constant target, hence stable for any step size.
    """
    return 1.0 - math.exp(-h / tau)


class _Unit:
    """State of one cooling unit; attribute names are the point names it publishes."""

    __slots__ = (
        "kind",
        "name",
        "capacity",
        "phase",
        "walk",
        "walk_smooth",
        "since_toggle",
        "since_start",
        "capacity_fraction",
        "capacity_integral",
        "load_fraction",
        "supply_temp",
        "return_temp",
        "setpoint",
        "fan_speed",
        "compressor",
        "power",
        "load",
        "derate",
    )

    def __init__(self, kind: _Kind, name: str, rng: random.Random):
        self.kind = kind
        self.name = name
        # Nameplates differ a little between units, and each unit's room peaks at a
        # slightly different time, so the units do not move in lock-step.
        self.capacity = kind.capacity_kw * rng.uniform(0.85, 1.15)
        self.phase = rng.uniform(-0.6, 0.6)
        self.setpoint = rng.choice(kind.setpoints)
        self.walk = _clamp(rng.gauss(0.0, WALK_SIGMA), -2 * WALK_LIMIT, 2 * WALK_LIMIT)
        self.walk_smooth = self.walk
        # Start mid-cycle somewhere in the band with the timers expired, as if the
        # plant had been running for a while.
        self.compressor = rng.random() < BASE_LOAD_FRACTION
        self.since_toggle = max(MIN_ON_S, MIN_OFF_S)
        self.since_start = MIN_START_INTERVAL_S
        #: The share of capacity the compressor runs at (its PI output), and the PI's integral.
        self.capacity_fraction = MIN_CAPACITY
        self.capacity_integral = MIN_CAPACITY
        self.supply_temp = self.setpoint + rng.uniform(-kind.band, kind.band)
        self.load_fraction = BASE_LOAD_FRACTION
        self.load = 0.0
        self.fan_speed = 0.0
        self.return_temp = 0.0
        self.power = 0.0
        #: Fraction of its capacity the unit can deliver (below 1 during a demo fault).
        self.derate = 1.0

    def _delta_t(self) -> float:
        """Return minus supply: heat carried per unit of flow (Q = m * cp * dT)."""
        load_ratio = self.load_fraction / BASE_LOAD_FRACTION
        flow_ratio = self.fan_speed / _DESIGN_FAN_PCT if self.kind.air_side else 1.0
        ratio = _clamp(load_ratio / max(flow_ratio, 0.05), 0.2, 2.5)
        return self.kind.design_delta_t * ratio

    def _fan_target(self) -> float:
        return _clamp(100.0 * self.load_fraction / FAN_FULL_LOAD, FAN_MIN_PCT, FAN_MAX_PCT)

    def _update_power(self) -> None:
        # The compressor draws the capacity it runs at over its COP (a derated unit in a
        # demo fault still draws it: its COP falls). COP falls a little as load (and with
        # it the lift) rises.
        fan_kw = self.kind.fan_kw * (self.fan_speed / 100.0) ** 3
        compressor_kw = 0.0
        if self.compressor:
            cop = self.kind.cop * (1.15 - 0.3 * self.load_fraction)
            compressor_kw = self.capacity * self.capacity_fraction / cop
        self.power = fan_kw + compressor_kw

    def settle(self, plant_time: float, demand: float) -> None:
        """Put the derived quantities at their steady values for the initial state."""
        self._update_load(plant_time, demand)
        # A modulating unit runs whenever its load needs at least its minimum capacity.
        self.compressor = self.compressor or self.load_fraction >= MIN_CAPACITY
        self.capacity_integral = _clamp(self.load_fraction, MIN_CAPACITY, 1.0)
        self.capacity_fraction = self.capacity_integral
        self.fan_speed = self._fan_target()
        self.return_temp = self.supply_temp + self._delta_t()
        self._update_power()

    def _update_load(self, plant_time: float, demand: float) -> None:
        day = 1.0 + LOAD_SWING * math.sin(2.0 * math.pi * plant_time / LOAD_PERIOD_S + self.phase)
        walk = 1.0 + _clamp(self.walk_smooth, -WALK_LIMIT, WALK_LIMIT)
        fraction = BASE_LOAD_FRACTION * day * walk * demand
        self.load_fraction = _clamp(fraction, LOAD_FRACTION_MIN, LOAD_FRACTION_MAX)
        self.load = self.load_fraction * self.capacity

    def advance(self, h: float, plant_time: float, demand: float, rng: random.Random) -> None:
        """Integrate C{h} seconds (C{h} <= L{MAX_SUBSTEP_S} for accuracy, any h for stability)."""
        # Load: exact OU update (variance independent of h), then a smoothing lag.
        a = math.exp(-h / WALK_TAU_S)
        self.walk = self.walk * a + WALK_SIGMA * math.sqrt(1.0 - a * a) * rng.gauss(0.0, 1.0)
        self.walk = _clamp(self.walk, -2 * WALK_LIMIT, 2 * WALK_LIMIT)
        self.walk_smooth += (self.walk - self.walk_smooth) * _approach(h, WALK_SMOOTH_TAU_S)
        self._update_load(plant_time, demand)

        # Capacity control: a PI loop on supply temperature while running; start and
        # stop only at the ends of its range, behind the anti-short-cycle timers.
        self.since_toggle += h
        self.since_start += h
        error = self.supply_temp - self.setpoint
        if self.compressor:
            self.capacity_integral = _clamp(self.capacity_integral + CAPACITY_KI * error * h, MIN_CAPACITY, 1.0)
            self.capacity_fraction = _clamp(self.capacity_integral + CAPACITY_KP * error, MIN_CAPACITY, 1.0)
            if self.capacity_integral <= MIN_CAPACITY and error < -STOP_BELOW_C and self.since_toggle >= MIN_ON_S:
                self.compressor = False
                self.since_toggle = 0.0
        elif error > self.kind.band and self.since_toggle >= MIN_OFF_S and self.since_start >= MIN_START_INTERVAL_S:
            self.compressor = True
            self.since_toggle = self.since_start = 0.0
            self.capacity_integral = self.capacity_fraction = MIN_CAPACITY  # loads up from its minimum

        # Supply settles where the heat imbalance puts it: above setpoint when the
        # load wins, below it when the compressor out-cools the load.
        cooling = self.capacity * self.capacity_fraction * self.derate if self.compressor else 0.0
        target = self.setpoint + SUPPLY_GAIN_C * (self.load - cooling) / self.capacity
        self.supply_temp += (target - self.supply_temp) * _approach(h, TAU_SUPPLY_S)

        # Fan: proportional to load, lagged and slew-limited.
        move = (self._fan_target() - self.fan_speed) * _approach(h, TAU_FAN_S)
        limit = FAN_SLEW_PCT_PER_S * h
        fan = self.fan_speed + _clamp(move, -limit, limit)
        self.fan_speed = _clamp(fan, FAN_MIN_PCT, FAN_MAX_PCT)

        # Return = supply + the load's temperature rise at the current flow, lagged.
        target_return = self.supply_temp + self._delta_t()
        self.return_temp += (target_return - self.return_temp) * _approach(h, TAU_RETURN_S)

        self._update_power()


class PlantModel:
    """A plant of cooling units with lumped first-order physics.

    Pure and deterministic: the same seed and the same sequence of C{step(dt)}
    calls give the same values. No threads, no wall clock; not thread-safe (one
    owner, normally L{SimulatorProducer}'s thread).
    """

    def __init__(self, units: int = 6, seed: int | None = None, site: str = "plant", faults: bool = False):
        if isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= MAX_UNITS:
            raise ValueError(f"units must be an integer from 1 to {MAX_UNITS}, not {units!r}")
        check_point_id(f"{site}/unit/point")  # InvalidPoint is a ValueError
        self.site = site
        self.time = 0.0
        #: Whether the scheduled demo fault (see L{FAULT_PERIOD_S}) runs.
        self.faults = faults
        #: When set, the first unit's share of capacity at a plant time, instead of the demo fault's
        #: (benchmarks use it for a slow fault: benchmarks/predicted_alarm.py).
        self.capacity_of_first: Callable[[float], float] | None = None
        self._demand = 1.0
        self._rng = random.Random(seed)
        self._units: list[_Unit] = []
        for index in range(units):
            kind = _KINDS[index % len(_KINDS)]
            name = f"{kind.name}-{index // len(_KINDS) + 1}"
            self._units.append(_Unit(kind, name, self._rng))
        for unit in self._units:
            unit.settle(self.time, self._demand)
        self._ids: list[str] = []
        self._uom: dict[str, str] = {}
        self._lookup: dict[str, tuple[_Unit, str]] = {}
        for unit in self._units:
            for point, uom in POINTS.items():
                point_id = f"{site}/{unit.name}/{point}"
                self._ids.append(point_id)
                self._uom[point_id] = uom
                self._lookup[point_id] = (unit, point)

    @property
    def unit_names(self) -> list[str]:
        """Unit names in plant order: chiller-1, crac-1, ahu-1, chiller-2, ..."""
        return [unit.name for unit in self._units]

    @property
    def demand(self) -> float:
        """Plant-wide load multiplier (1.0 = normal); a knob for demos and tests."""
        return self._demand

    def set_demand(self, factor: float) -> None:
        """Scale every unit's heat load, e.g. 1.4 for a heat wave; takes effect smoothly."""
        if not (0.0 <= factor <= 3.0):
            raise ValueError(f"demand must be between 0 and 3, not {factor!r}")
        self._demand = float(factor)

    def step(self, dt: float) -> None:
        """Advance the physics by C{dt} seconds (any dt >= 0; large dt is sub-stepped)."""
        if not (dt >= 0.0) or math.isinf(dt):
            raise ValueError(f"dt must be a finite number of seconds >= 0, not {dt!r}")
        if dt == 0.0:
            return
        count = min(MAX_SUBSTEPS, max(1, math.ceil(dt / MAX_SUBSTEP_S)))
        h = dt / count
        for _ in range(count):
            self.time += h
            if self.capacity_of_first is not None:
                self._units[0].derate = self.capacity_of_first(self.time)
            else:
                self._units[0].derate = FAULT_CAPACITY if self.fault_active else 1.0
            for unit in self._units:
                unit.advance(h, self.time, self._demand, self._rng)

    @property
    def fault_active(self) -> bool:
        """Whether the demo fault holds the first unit now (only with C{faults})."""
        if not self.faults or self.time < FAULT_FIRST_S:
            return False
        return (self.time - FAULT_FIRST_S) % FAULT_PERIOD_S < FAULT_DURATION_S

    def point_ids(self) -> list[str]:
        """Every point id, unit by unit in plant order, points in L{POINTS} order."""
        return list(self._ids)

    def units_of_measure(self) -> dict[str, str]:
        """Point id -> unit of measure string ("°C", "%", "kW", "" for on/off)."""
        return dict(self._uom)

    def value(self, point_id: str) -> Value:
        """The current value of one point: rounded float, or bool for the compressor."""
        try:
            unit, point = self._lookup[point_id]
        except KeyError:
            raise KeyError(f"unknown simulator point {point_id!r}") from None
        raw = getattr(unit, point)
        if isinstance(raw, bool):
            return raw
        return round(float(raw), 2)

    def sample(self, point_id: str, ts: float | None = None) -> Sample:
        """The current value of one point as a L{Sample} stamped C{ts}."""
        return Sample(point_id, self.value(point_id), self._uom[point_id], ts)

    def samples(self, ts: float | None = None) -> list[Sample]:
        """Every point's current value, all stamped C{ts}, in L{point_ids} order."""
        return [self.sample(point_id, ts) for point_id in self._ids]


class SimulatorProducer:
    """Drives a L{PlantModel} in real time and publishes a steady stream of samples.

    C{rate} is the total number of point updates per second for the whole plant,
    spread round-robin over the points, so the load on the server is set directly
    (handy for benchmarks) regardless of the plant size.
    """

    name = "simulator"

    def __init__(
        self,
        units: int = 6,
        rate: float = 50.0,
        seed: int | None = None,
        site: str = "plant",
        clock: Callable[[], float] = time.time,
        faults: bool = False,
    ):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= MAX_RATE:
            raise ValueError(
                f"rate must be > 0 and <= {MAX_RATE:g} updates per second, not {rate!r}"
            )
        self.rate = float(rate)
        self.clock = clock
        self.model = PlantModel(units=units, seed=seed, site=site, faults=faults)
        self._cursor = 0
        #: Seconds between physics steps: L{PHYSICS_INTERVAL_S}, longer for plant-sized models.
        self.physics_interval = max(PHYSICS_INTERVAL_S, PHYSICS_SECONDS_PER_UNIT * units)

    def point_meta(self) -> dict[str, PointMeta]:
        """What the simulator promises about each point: it updates every C{points / rate} seconds
        (its expected interval), and plausible alarm limits, so the demo shows alarms."""
        point_ids = self.model.point_ids()
        interval = max(len(point_ids) / self.rate, 0.1)
        return {p: PointMeta(expected_interval=interval, limits=demo_limits(p)) for p in point_ids}

    def run(self, publish: Callable[[Sequence[Sample]], None], stop: threading.Event) -> None:
        """Publish the full initial state, then paced batches until C{stop} is set.

        Slots are counted from a fixed start so sleeping jitter never accumulates
        into drift; the wait is on C{stop} so a stop request ends the wait at once.
        """
        clock = self.clock
        model = self.model
        ids = model.point_ids()
        publish([model.sample(point_id, clock()) for point_id in ids])

        rate = self.rate
        slot = max(MIN_SLOT_S, 1.0 / rate)
        start = clock()
        last_physics = start
        emitted = 0
        next_slot = 1
        while not stop.is_set():
            deadline = start + next_slot * slot
            delay = deadline - clock()
            if delay > slot:
                # The clock went backwards (e.g. wall-clock adjustment): restart pacing.
                start, emitted, next_slot = clock(), 0, 1
                last_physics = min(last_physics, start)
                continue
            if delay > 0 and stop.wait(delay):
                break
            now = clock()
            elapsed = now - start
            if now - deadline > MAX_BACKLOG_S:
                # Far behind (suspended, overloaded): drop the backlog, do not burst.
                start, emitted, elapsed = now, 0, 0.0
            next_slot = int(elapsed / slot) + 1

            if now - last_physics >= self.physics_interval:
                model.step(now - last_physics)
                last_physics = now

            due = int(rate * elapsed) - emitted
            if due <= 0:
                continue
            emitted += due
            batch: list[Sample] = []
            cursor = self._cursor
            count = len(ids)
            for _ in range(due):
                batch.append(model.sample(ids[cursor], clock()))
                cursor = cursor + 1 if cursor + 1 < count else 0
            self._cursor = cursor
            publish(batch)




def demo_limits(point_id: str) -> AlarmLimits | None:
    """Plausible supply-temperature alarm limits for a simulated unit (None for other points)."""
    unit, point = point_id.split("/")[1:]
    if point != "supply_temp":
        return None
    if unit.startswith("chiller"):
        return AlarmLimits(high=9.0, low=4.0, deadband=0.3, delay=5.0, severity="major")
    if unit.startswith("crac"):
        return AlarmLimits(high=22.0, low=15.0, deadband=0.5, delay=5.0, severity="critical")
    return AlarmLimits(high=17.0, low=10.0, deadband=0.5, delay=5.0, severity="minor")


__all__ = ["POINTS", "PlantModel", "SimulatorProducer", "demo_limits"]
