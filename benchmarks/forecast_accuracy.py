"""Forecast accuracy: the temperature forecast against the naive "no change" forecast and stronger baselines.

Replays deterministic runs of the plant simulator (L{PlantModel}, stepped with
irregular, seeded sample spacing like a real source), feeds every temperature
point (C{*_temp}) through L{Forecaster} as L{hvac_push.analytics.derived} does, and at
regular evaluation instants compares the forecast N minutes ahead with what
the plant then really did. The naive forecast is the last value; the stronger
baselines are a moving average (time constant = the horizon) and the same time
one cycle earlier (the simulator's ten-minute "day", L{LOAD_PERIOD_S}). The
last table is what C{forecast_gate} publishes (L{SkillGate}): the share of
evaluations where the forecast had earned its place, and its error there
against the best baseline's at the same instants.

    .venv/bin/python benchmarks/forecast_accuracy.py                    # the table in docs/performance.md
    .venv/bin/python benchmarks/forecast_accuracy.py --seeds 1,2 --hours 1
    .venv/bin/python benchmarks/forecast_accuracy.py --tune             # grid search on training seeds

C{--tune} searches the time constants on seeds 101-103 (never the reported
seeds) and prints the best settings by mean MAE ratio over the horizons.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hvac_push.analytics.forecast import Forecaster, HoltParams  # noqa: E402
from hvac_push.analytics.forecast_skill import SkillGate  # noqa: E402
from hvac_push.sources.simulator import LOAD_PERIOD_S, PlantModel  # noqa: E402

HORIZONS_MIN = (5, 15, 30)
WARMUP_S = 900.0
EVAL_EVERY_S = 10.0

Series = list[tuple[float, float]]


def record(seed: int, hours: float, units: int = 6) -> list[Series]:
    """Every temperature point's samples over C{hours} of simulated plant time.

    Each step is 0.3-2.0 s (seeded), and each point is sampled after each step
    with probability 0.7, so spacing is irregular and differs between points.
    """
    model = PlantModel(units=units, seed=seed)
    rng = random.Random(seed * 7919 + 1)
    ids = [p for p in model.point_ids() if p.rsplit("/", 1)[1].endswith("_temp")]
    series: dict[str, Series] = {p: [] for p in ids}
    t = 0.0
    end = hours * 3600.0
    while t < end:
        dt = rng.uniform(0.3, 2.0)
        model.step(dt)
        t += dt
        for point_id in ids:
            if rng.random() < 0.7:
                value = model.value(point_id)
                assert isinstance(value, float)
                series[point_id].append((t, value))
    return list(series.values())


def _truth(times: list[float], values: list[float], at: float) -> float | None:
    """The series linearly interpolated at C{at}, or None past its end."""
    i = bisect.bisect_left(times, at)
    if i >= len(times):
        return None
    if i == 0 or times[i] == at:
        return values[i]
    t0, t1 = times[i - 1], times[i]
    return values[i - 1] + (values[i] - values[i - 1]) * (at - t0) / (t1 - t0)


BASELINE_NAMES = ("naive", "average", "cycle")


@dataclass
class Errors:
    model: dict[int, float]
    naive: dict[int, float]
    count: dict[int, int]
    #: Sums of absolute error of the moving-average and previous-cycle baselines.
    average: dict[int, float]
    cycle: dict[int, float]
    #: Where the gate published: count, the forecast's error sum, and each baseline's there.
    gated_count: dict[int, int]
    gated_model: dict[int, float]
    gated_naive: dict[int, float]
    gated_average: dict[int, float]
    gated_cycle: dict[int, float]

    @classmethod
    def empty(cls) -> "Errors":
        def zeros() -> dict[int, float]:
            return {h: 0.0 for h in HORIZONS_MIN}

        return cls(zeros(), zeros(), {h: 0 for h in HORIZONS_MIN}, zeros(), zeros(),
                   {h: 0 for h in HORIZONS_MIN}, zeros(), zeros(), zeros(), zeros())

    def add(self, other: "Errors") -> None:
        for name in ("model", "naive", "count", "average", "cycle", "gated_count", "gated_model", "gated_naive",
                     "gated_average", "gated_cycle"):
            mine, theirs = getattr(self, name), getattr(other, name)
            for h in HORIZONS_MIN:
                mine[h] += theirs[h]

    def mae(self, h: int) -> tuple[float, float]:
        n = max(self.count[h], 1)
        return self.model[h] / n, self.naive[h] / n

    def baselines(self, h: int) -> dict[str, float]:
        n = max(self.count[h], 1)
        return {"naive": self.naive[h] / n, "average": self.average[h] / n, "cycle": self.cycle[h] / n}


def evaluate(all_series: list[Series], params: HoltParams, learn_every: float = 30.0) -> Errors:
    errors = Errors.empty()
    for series in all_series:
        times = [t for t, _ in series]
        values = [v for _, v in series]
        horizons = tuple(60.0 * h for h in HORIZONS_MIN)
        holt = Forecaster(horizons, params, learn_every=learn_every)
        gate = SkillGate(horizons, cycle=LOAD_PERIOD_S, every=learn_every)
        averages: dict[int, float] = {}
        previous: float | None = None
        next_eval = WARMUP_S
        for t, v in series:
            holt.update(t, v)
            gate.update(t, v, [holt.forecast(h) for h in horizons])
            for h in HORIZONS_MIN:
                if h not in averages or previous is None:
                    averages[h] = v
                else:
                    averages[h] += (v - averages[h]) * (1.0 - math.exp(-(t - previous) / (60.0 * h)))
            previous = t
            if t < next_eval:
                continue
            next_eval = t + EVAL_EVERY_S
            for index, h in enumerate(HORIZONS_MIN):
                actual = _truth(times, values, t + 60.0 * h)
                if actual is None:
                    continue
                # Same time one cycle back (whole cycles, so never a value from after t).
                back = LOAD_PERIOD_S * max(1, math.ceil(60.0 * h / LOAD_PERIOD_S))
                cycle = _truth(times, values, t + 60.0 * h - back)
                if cycle is None or t + 60.0 * h - back < times[0]:
                    cycle = v
                model = abs(holt.forecast(60.0 * h) - actual)
                naive, average, cycle_error = abs(v - actual), abs(averages[h] - actual), abs(cycle - actual)
                errors.model[h] += model
                errors.naive[h] += naive
                errors.average[h] += average
                errors.cycle[h] += cycle_error
                errors.count[h] += 1
                if gate.earns(index):
                    errors.gated_count[h] += 1
                    errors.gated_model[h] += model
                    errors.gated_naive[h] += naive
                    errors.gated_average[h] += average
                    errors.gated_cycle[h] += cycle_error
    return errors


def table(errors: Errors) -> str:
    lines = [
        "| horizon | MAE forecast (°C) | MAE naive (°C) | forecast / naive | evaluations |",
        "|---|---|---|---|---|",
    ]
    for h in HORIZONS_MIN:
        model, naive = errors.mae(h)
        lines.append(f"| {h} min | {model:.3f} | {naive:.3f} | {model / naive:.2f} | {errors.count[h]} |")
    return "\n".join(lines)


def baseline_table(errors: Errors) -> str:
    """MAE of the forecast and of each baseline, and what the skill gate publishes."""
    lines = [
        "| horizon | forecast | last value | moving average | previous cycle | forecast / best baseline "
        "| published (gate) | gated forecast / best baseline over those instants |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h in HORIZONS_MIN:
        model, _ = errors.mae(h)
        base = errors.baselines(h)
        best = min(base.values())
        share = errors.gated_count[h] / max(errors.count[h], 1)
        gated_best = min(errors.gated_naive[h], errors.gated_average[h], errors.gated_cycle[h])
        gated = f"{errors.gated_model[h] / gated_best:.2f}" if errors.gated_count[h] and gated_best else "-"
        lines.append(
            f"| {h} min | {model:.3f} | {base['naive']:.3f} | {base['average']:.3f} | {base['cycle']:.3f} "
            f"| {model / best:.2f} | {100 * share:.0f} % | {gated} |"
        )
    return "\n".join(lines)


def tune(hours: float) -> None:
    runs = [record(seed, hours) for seed in (101, 102, 103)]
    data = [s for run in runs for s in run]
    results = []
    for tl, tt, td in itertools.product((120, 240, 600, 1200), (300, 900, 1800), (60, 300, 900)):
        params = HoltParams(tau_level=tl, tau_trend=tt, tau_damp=td)
        errors = evaluate(data, params)
        ratios = [m / n for m, n in (errors.mae(h) for h in HORIZONS_MIN)]
        results.append((sum(ratios) / len(ratios), tl, tt, td, ratios))
    results.sort()
    print("mean ratio  tau_level  tau_trend  tau_damp  ratios at " + ", ".join(f"{h} min" for h in HORIZONS_MIN))
    for score, tl, tt, td, ratios in results[:10]:
        print(f"{score:10.3f}  {tl:9}  {tt:9}  {td:8}  " + "  ".join(f"{r:.2f}" for r in ratios))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated simulator seeds")
    parser.add_argument("--hours", type=float, default=3.0, help="simulated hours per seed")
    parser.add_argument("--tune", action="store_true", help="grid-search the time constants on seeds 101-103")
    args = parser.parse_args(argv)
    if args.tune:
        tune(args.hours)
        return 0
    seeds = [int(s) for s in args.seeds.split(",") if s]
    params = HoltParams()
    started = time.perf_counter()
    total = Errors.empty()
    for seed in seeds:
        total.add(evaluate(record(seed, args.hours), params))
    elapsed = time.perf_counter() - started
    print(f"seeds {','.join(map(str, seeds))}, {args.hours:g} simulated hours each, 6 units (18 temperature points);")
    print(f"tau_level={params.tau_level:g} s, tau_trend={params.tau_trend:g} s, tau_damp={params.tau_damp:g} s; "
          f"evaluated every {EVAL_EVERY_S:g} s after {WARMUP_S:g} s warm-up")
    print(f"python {platform.python_version()} on {platform.machine()}, {elapsed:.1f} s\n")
    print(table(total))
    print()
    print(baseline_table(total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
