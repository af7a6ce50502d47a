"""hvac_push.sources.simulator: the plant simulator must look like a plant: bounded, smooth, cycling, paced."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import pytest
from twisted.internet.task import Clock

from hvac_push.core.points import Sample, check_point_id
from hvac_push.sources import simulator
from hvac_push.sources.simulator import PlantModel, SimulatorProducer

POINT_NAMES = ["supply_temp", "return_temp", "setpoint", "fan_speed", "compressor", "power", "load"]

#: Plausible envelopes per kind: (supply, return) in °C.
ENVELOPES = {
    "chiller": ((4.5, 9.5), (8.0, 16.0)),
    "crac": ((16.0, 22.0), (24.0, 32.0)),
    "ahu": ((11.5, 17.5), (19.0, 27.0)),
}


def kind_of(point_id: str) -> str:
    return point_id.split("/")[1].split("-")[0]


def run_model(model: PlantModel, dt: float, seconds: float) -> list[dict[str, float]]:
    """Step C{model} and record every point (bools as 0/1) after each step."""
    ids = model.point_ids()
    history = []
    for _ in range(int(round(seconds / dt))):
        model.step(dt)
        history.append({pid: float(model.value(pid)) for pid in ids})
    return history


Run = tuple[PlantModel, list[dict[str, float]]]


@pytest.fixture(scope="module")
def two_hours() -> Run:
    """Two simulated hours of a six-unit plant at dt=1 s, shared by several tests."""
    model = PlantModel(units=6, seed=1234)
    return model, run_model(model, 1.0, 7200.0)


# --- construction ---------------------------------------------------------------


def test_units_cycle_through_chiller_crac_ahu_with_numbered_names() -> None:
    assert PlantModel(units=1).unit_names == ["chiller-1"]
    assert PlantModel(units=4).unit_names == ["chiller-1", "crac-1", "ahu-1", "chiller-2"]
    assert PlantModel(units=7).unit_names[-1] == "chiller-3"


def test_every_unit_has_the_seven_points_with_valid_ids_and_units() -> None:
    model = PlantModel(units=5, site="dc-east")
    ids = model.point_ids()
    assert len(ids) == len(set(ids)) == 5 * 7
    assert ids[:7] == [f"dc-east/chiller-1/{p}" for p in POINT_NAMES]
    for pid in ids:
        assert check_point_id(pid) == pid
    uom = model.units_of_measure()
    assert list(uom) == ids
    assert uom["dc-east/crac-1/supply_temp"] == "°C"
    assert uom["dc-east/crac-1/fan_speed"] == "%"
    assert uom["dc-east/ahu-1/power"] == "kW"
    assert uom["dc-east/ahu-1/load"] == "kW"
    assert model.point_ids() == ids  # stable


@pytest.mark.parametrize("units", [0, -1, 10_001, 2.5, True, "3"])
def test_bad_unit_count_is_refused(units: object) -> None:
    with pytest.raises(ValueError, match="units"):
        PlantModel(units=units)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="units"):
        SimulatorProducer(units=units)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, -5, 1_000_001, math.nan, math.inf, "50"])
def test_bad_rate_is_refused(rate: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        SimulatorProducer(rate=rate)  # type: ignore[arg-type]


def test_limits_are_accepted() -> None:
    assert len(PlantModel(units=1000).point_ids()) == 7000
    big = SimulatorProducer(units=10_000)
    assert len(big.model.point_ids()) == 70_000 and big.physics_interval == 5.0  # plant scale, physics every 5 s
    assert SimulatorProducer(units=1, rate=1_000_000).rate == 1_000_000
    assert SimulatorProducer().name == "simulator"


def test_bad_site_and_bad_dt_are_refused() -> None:
    with pytest.raises(ValueError):
        PlantModel(site="a/b")
    model = PlantModel(units=1)
    for dt in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="dt"):
            model.step(dt)


def test_samples_carry_rounded_values_units_and_the_given_ts() -> None:
    model = PlantModel(units=3, seed=5)
    model.step(3.0)
    batch = model.samples(ts=123.5)
    assert [s.point_id for s in batch] == model.point_ids()
    for s in batch:
        assert isinstance(s, Sample)
        assert s.ts == 123.5 and s.status == "ok"
        assert s.unit == model.units_of_measure()[s.point_id]
        if s.point_id.endswith("/compressor"):
            assert isinstance(s.value, bool)
        else:
            assert isinstance(s.value, float) and round(s.value, 2) == s.value
    assert model.sample("plant/crac-1/load", 9.0).ts == 9.0
    with pytest.raises(KeyError):
        model.sample("plant/crac-9/load", 0.0)


# --- physics --------------------------------------------------------------------


def test_same_seed_and_steps_give_identical_values_and_other_seeds_differ() -> None:
    dts = [0.01, 0.5, 1.0, 3.7, 10.0] * 40
    a, b, c = PlantModel(seed=42), PlantModel(seed=42), PlantModel(seed=43)
    for dt in dts:
        a.step(dt)
        b.step(dt)
        c.step(dt)
    assert a.samples(0.0) == b.samples(0.0)
    assert a.samples(0.0) != c.samples(0.0)


def _assert_plausible(history: list[dict[str, float]]) -> None:
    for row in history:
        for pid, v in row.items():
            assert math.isfinite(v), pid
            kind, point = kind_of(pid), pid.rsplit("/", 1)[1]
            supply_range, return_range = ENVELOPES[kind]
            if point == "supply_temp":
                assert supply_range[0] <= v <= supply_range[1], (pid, v)
            elif point == "return_temp":
                assert return_range[0] <= v <= return_range[1], (pid, v)
            elif point == "fan_speed":
                assert 20.0 <= v <= 100.0, (pid, v)
            elif point in ("power", "load"):
                assert 0.0 <= v < 1000.0, (pid, v)


def test_values_stay_plausible_over_two_simulated_hours(two_hours: Run) -> None:
    _, history = two_hours
    _assert_plausible(history)


@pytest.mark.parametrize(("dt", "seconds"), [(0.001, 5.0), (0.01, 60.0), (10.0, 7200.0)])
def test_values_stay_plausible_for_tiny_and_huge_steps(dt: float, seconds: float) -> None:
    model = PlantModel(units=3, seed=9)
    _assert_plausible(run_model(model, dt, seconds))


def test_values_stay_plausible_under_extreme_demand() -> None:
    for demand in (0.0, 3.0):
        model = PlantModel(units=3, seed=3)
        model.set_demand(demand)
        _assert_plausible(run_model(model, 5.0, 1800.0))


@pytest.fixture(scope="module")
def light_load() -> Run:
    """Two simulated hours at a light load (below the units' minimum capacity), where they cycle."""
    model = PlantModel(units=6, seed=1234)
    model.set_demand(0.35)
    return model, run_model(model, 1.0, 7200.0)


def _starts(model: PlantModel, history: list[dict[str, float]], unit: str) -> list[int]:
    pid = f"{model.site}/{unit}/compressor"
    return [t for t in range(1, len(history)) if history[t][pid] and not history[t - 1][pid]]


def test_compressor_cycles_but_never_faster_than_its_minimum_on_off_times(light_load: Run) -> None:
    # Issue 19: this used two hours at normal load and asked for at least 20 toggles per unit,
    # which encoded on/off compressors cycling ~60 times an hour. Units now modulate and run
    # through normal load, so the cycling is checked where real kit cycles: below its minimum
    # capacity. The minimum on/off time assertion is unchanged.
    model, history = light_load
    for unit in model.unit_names:
        pid = f"{model.site}/{unit}/compressor"
        states = [row[pid] for row in history]
        toggles = [(t, states[t]) for t in range(1, len(states)) if states[t] != states[t - 1]]
        assert len(toggles) >= 8, f"{unit} did not cycle at light load"
        for (t0, state), (t1, _) in zip(toggles, toggles[1:]):
            held = t1 - t0  # seconds, dt = 1
            minimum = simulator.MIN_ON_S if state else simulator.MIN_OFF_S
            assert held >= minimum, f"{unit} toggled after {held}s in state {state}"


@pytest.mark.parametrize("demand", [0.35, 1.0])
def test_no_unit_starts_more_than_six_times_in_any_hour(demand: float, light_load: Run, two_hours: Run) -> None:
    model, history = light_load if demand == 0.35 else two_hours
    for unit in model.unit_names:
        starts = _starts(model, history, unit)
        for first in starts:
            in_hour = [t for t in starts if first <= t < first + 3600]
            assert len(in_hour) <= 6, (unit, in_hour)
    if demand == 1.0:  # a healthy plant at normal load modulates and does not cycle at all
        assert all(not _starts(model, history, unit) for unit in model.unit_names)


def test_a_chiller_with_the_demo_fault_still_starts_at_most_six_times_an_hour() -> None:
    model = PlantModel(units=1, seed=3, faults=True)
    history = run_model(model, 1.0, 3600.0)
    assert len(_starts(model, history, "chiller-1")) <= 6
    assert max(row["plant/chiller-1/supply_temp"] for row in history) > 9.0  # the fault still shows


def test_capacity_follows_load_so_power_does_too() -> None:
    model = PlantModel(units=1, seed=2)
    history = run_model(model, 1.0, 1800.0)[600:]
    ratios = [row["plant/chiller-1/power"] / row["plant/chiller-1/load"] for row in history]
    # A modulating chiller's power tracks its load (COP ~5-6 plus fans), instead of jumping
    # between full power and fans only.
    assert all(0.1 < r < 0.3 for r in ratios), (min(ratios), max(ratios))


def test_compressor_runs_continuously_at_high_load_and_idles_at_light_load() -> None:
    busy, idle = PlantModel(units=3, seed=11), PlantModel(units=3, seed=11)
    busy.set_demand(3.0)
    idle.set_demand(0.2)
    busy_history = run_model(busy, 1.0, 900.0)[300:]
    idle_history = run_model(idle, 1.0, 900.0)[300:]
    for unit in busy.unit_names:
        pid = f"plant/{unit}/compressor"
        assert all(row[pid] == 1.0 for row in busy_history), unit
        assert all(row[pid] == 0.0 for row in idle_history), unit


def test_temperatures_and_fan_change_smoothly_for_small_steps() -> None:
    history = run_model(PlantModel(units=3, seed=21), 0.01, 30.0)
    for prev, row in zip(history, history[1:]):
        for pid, v in row.items():
            point = pid.rsplit("/", 1)[1]
            if point in ("supply_temp", "return_temp"):
                assert abs(v - prev[pid]) <= 0.02, pid  # true change ~0.003; rounding adds 0.01
            elif point == "fan_speed":
                assert abs(v - prev[pid]) <= 0.03, pid  # slew limit 2 %/s


def test_load_drifts_smoothly_and_is_not_constant(two_hours: Run) -> None:
    model, history = two_hours
    for unit in model.unit_names:
        pid = f"plant/{unit}/load"
        series = [row[pid] for row in history]
        assert max(series) - min(series) > 0.2 * (sum(series) / len(series))
        biggest_jump = max(abs(b - a) for a, b in zip(series, series[1:]))
        assert biggest_jump < 0.02 * max(series)


def test_average_power_rises_with_load() -> None:
    averages = []
    for demand in (0.6, 1.0, 1.4):
        model = PlantModel(units=3, seed=8)
        model.set_demand(demand)
        history = run_model(model, 1.0, 1200.0)
        power = {u: sum(r[f"plant/{u}/power"] for r in history) for u in model.unit_names}
        averages.append({u: total / len(history) for u, total in power.items()})
    for unit in averages[0]:
        assert averages[0][unit] < averages[1][unit] < averages[2][unit], unit


def test_power_is_mostly_compressor_when_on_and_only_fan_when_off(light_load: Run) -> None:
    # Moved to the light-load run (issue 19): at normal load the units never turn off now.
    model, history = light_load
    for unit in model.unit_names:
        on = [r[f"plant/{unit}/power"] for r in history if r[f"plant/{unit}/compressor"]]
        off = [r[f"plant/{unit}/power"] for r in history if not r[f"plant/{unit}/compressor"]]
        assert min(on) > 3 * max(off), unit


def test_return_is_warmer_than_supply_on_average(two_hours: Run) -> None:
    model, history = two_hours
    expected_rise = {"chiller": (3.0, 7.0), "crac": (7.0, 11.0), "ahu": (6.0, 10.0)}
    for unit in model.unit_names:
        rise = sum(r[f"plant/{unit}/return_temp"] - r[f"plant/{unit}/supply_temp"] for r in history)
        rise /= len(history)
        low, high = expected_rise[unit.split("-")[0]]
        assert low < rise < high, (unit, rise)


def test_supply_hovers_around_setpoint(two_hours: Run) -> None:
    model, history = two_hours
    for unit in model.unit_names:
        errors = [r[f"plant/{unit}/supply_temp"] - r[f"plant/{unit}/setpoint"] for r in history]
        assert abs(sum(errors) / len(errors)) < 0.5, unit


# --- producer -------------------------------------------------------------------


class Collector:
    """A fake C{publish}: remembers each batch and the (fake) time it arrived."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.batches: list[list[Sample]] = []
        self.arrived: list[float] = []

    def __call__(self, samples: Sequence[Sample]) -> None:
        self.batches.append(list(samples))
        self.arrived.append(self.clock.seconds())


class ClockedStop:
    """The producer's stop event on a L{Clock}: waiting advances the clock, so a run is instant and exact.

    The stop is set when the clock reaches C{until}; a wait that would pass it
    ends right there, as C{threading.Event.wait} returns as soon as the event
    is set. C{oversleep} is added to every completed wait, as a loaded
    machine wakes a thread late. C{events} maps a time to something that
    happens then (seen by the producer when its current wait ends).
    """

    def __init__(
        self, clock: Clock, until: float, oversleep: float = 0.0, events: dict[float, Callable[[], None]] | None = None
    ) -> None:
        self.clock = clock
        self.until = until
        self.oversleep = oversleep
        self.events = dict(events or {})
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return self.clock.seconds() >= self.until

    def wait(self, delay: float) -> bool:
        self.waits.append(delay)
        now = self.clock.seconds()
        self.clock.advance(min(delay + self.oversleep, max(0.0, self.until - now)))
        for due in sorted(t for t in self.events if t <= self.clock.seconds()):
            self.events.pop(due)()
        return self.is_set()


def ticking(clock: Clock, offset: list[float] | None = None) -> Callable[[], float]:
    """A producer's clock on C{clock}: each reading takes 100 ns, as a real clock never reads the same instant twice.

    C{offset[0]} is added to every reading (a wall-clock step, a suspended process).
    """

    def now() -> float:
        clock.advance(1e-7)
        return clock.seconds() + (offset[0] if offset else 0.0)

    return now


def run_producer(
    producer: SimulatorProducer, clock: Clock, seconds: float, **stop_options: Any
) -> tuple[Collector, ClockedStop]:
    """Run C{producer} on C{clock} (no thread, no real time) until C{seconds} of fake time have passed."""
    collector = Collector(clock)
    stop = ClockedStop(clock, clock.seconds() + seconds, **stop_options)
    producer.run(collector, stop)  # type: ignore[arg-type]
    return collector, stop


def test_producer_publishes_initial_state_then_paced_round_robin_samples() -> None:
    clock = Clock()
    producer = SimulatorProducer(units=3, rate=200, seed=1, clock=ticking(clock))
    ids = producer.model.point_ids()
    sim_started = producer.model.time
    collector, _ = run_producer(producer, clock, 0.5)
    assert 0.45 <= producer.model.time - sim_started <= 0.5  # physics follows the clock

    first, rest = collector.batches[0], collector.batches[1:]
    assert [s.point_id for s in first] == ids
    assert all(rest), "empty batches must not be published"
    streamed = [s for batch in rest for s in batch]
    assert 96 <= len(streamed) <= 100, len(streamed)  # 200/s for 0.5 s, the last slot cut by the stop
    assert max(len(batch) for batch in rest) <= 3  # ~2 per 10 ms slot, no bursts
    assert all(b - a == pytest.approx(0.01, abs=1e-4) for a, b in zip(collector.arrived[1:], collector.arrived[2:]))

    stamps = [s.ts for batch in collector.batches for s in batch if s.ts is not None]
    assert len(stamps) == len(ids) + len(streamed)  # every sample is stamped
    assert stamps == sorted(stamps)
    assert all(0.0 <= ts <= 0.5 for ts in stamps)

    positions = [ids.index(s.point_id) for s in streamed]
    assert positions[0] == 0
    assert all(b == (a + 1) % len(ids) for a, b in zip(positions, positions[1:]))


def test_high_rate_is_delivered_as_batches_per_10ms_slot() -> None:
    clock = Clock()
    collector, _ = run_producer(SimulatorProducer(units=6, rate=10_000, seed=2, clock=ticking(clock)), clock, 0.2)
    sizes = [len(b) for b in collector.batches[1:]]
    assert 19 <= len(sizes) <= 20
    assert all(99 <= size <= 101 for size in sizes), sizes
    assert 1900 <= sum(sizes) <= 2000


def test_late_wakeups_do_not_accumulate_into_drift() -> None:
    # Every wait ends 3 ms late, as on a loaded machine; slots count from a fixed start, so the rate holds.
    clock = Clock()
    producer = SimulatorProducer(units=2, rate=1000, seed=5, clock=ticking(clock))
    collector, _ = run_producer(producer, clock, 1.0, oversleep=0.003)
    streamed = sum(len(b) for b in collector.batches[1:])
    assert 980 <= streamed <= 1000, streamed


def test_stop_ends_a_long_wait_at_once() -> None:
    clock = Clock()
    collector, stop = run_producer(SimulatorProducer(units=1, rate=0.5, clock=ticking(clock)), clock, 0.1)
    assert len(collector.batches) == 1  # only the initial state so far
    assert stop.waits == [pytest.approx(2.0)]  # one wait for the whole 2 s slot, on the stop event...
    assert clock.seconds() == pytest.approx(0.1, abs=1e-4)  # ...which returned when the stop was set, not after the slot


def test_a_large_backlog_is_dropped_instead_of_burst() -> None:
    clock = Clock()
    offset = [0.0]
    producer = SimulatorProducer(units=2, rate=1000, seed=4, clock=ticking(clock, offset))

    def suspended() -> None:
        offset[0] = 30.0  # as if the process had been suspended for half a minute

    collector, _ = run_producer(producer, clock, 0.1, events={0.05: suspended})
    sizes = [len(b) for b in collector.batches[1:]]
    assert max(sizes) <= 50, max(sizes)
    assert sum(sizes) < 300


def test_a_clock_stepping_backwards_does_not_stall_the_stream() -> None:
    clock = Clock()
    offset = [0.0]
    producer = SimulatorProducer(units=2, rate=1000, seed=4, clock=ticking(clock, offset))

    def stepped_back() -> None:
        offset[0] = -30.0

    collector, _ = run_producer(producer, clock, 0.1, events={0.05: stepped_back})
    after_jump = [s for b in collector.batches for s in b if s.ts is not None and s.ts < -20]
    assert len(after_jump) >= 40


def test_a_capacity_schedule_for_the_first_unit_replaces_the_demo_fault() -> None:
    """The hook behind benchmarks/predicted_alarm.py's slow fault: a starved chiller warms up, a whole one does not."""
    supply = "plant/chiller-1/supply_temp"
    starved, whole = PlantModel(units=1, seed=4, faults=True), PlantModel(units=1, seed=4, faults=True)
    starved.capacity_of_first = lambda plant_time: 0.05
    whole.capacity_of_first = lambda plant_time: 1.0  # the demo fault (which starts at 30 s) no longer applies
    warmest = {id(starved): 0.0, id(whole): 0.0}
    for _ in range(900):
        for model in (starved, whole):
            model.step(1.0)
            value = model.value(supply)
            assert isinstance(value, float)
            warmest[id(model)] = max(warmest[id(model)], value)
    assert warmest[id(starved)] > 9.0 > warmest[id(whole)]
