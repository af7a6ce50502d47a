"""The C{predicted} alarm on the simulator: how long before the real limit alarm it comes, and how often it is wrong.

Replays the plant simulator on a fake clock, in one of two scenarios: C{demo}
(its demo faults: the first chiller loses most of its capacity for 3 minutes
every 10, so its supply temperature jumps past the demo's 9 °C limit within
a minute) or C{drift} (a slow fault: each hour its capacity falls from 100 % to
5 % over 40 minutes, so the temperature creeps up to the limit), through the
real L{Hub}, L{AlarmEngine} (with the simulator's demo limits) and
L{DerivedPoints}, exactly as the server wires them. Nothing waits on the wall
clock: hours of plant time take seconds.

For every onset of a real limit alarm (C{high} or C{low} entering C{active})
the lead time is the time since the same point's C{predicted} condition for
that same limit came on, if it came on within the C{--window} before the
crossing and still stood when the value crossed (else the crossing was missed:
no warning). A C{predicted} condition that went off without its limit being
crossed is a false alarm.

    .venv/bin/python benchmarks/predicted_alarm.py                      # the table in docs/performance.md
    .venv/bin/python benchmarks/predicted_alarm.py --scenario drift
    .venv/bin/python benchmarks/predicted_alarm.py --seeds 1,2 --hours 1 --predict-within 10
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.task import Clock  # noqa: E402

from hvac_push.analytics.alarms import Alarm, AlarmEngine  # noqa: E402
from hvac_push.analytics.derived import DerivedPoints, DerivedSettings  # noqa: E402
from hvac_push.core.hub import Hub  # noqa: E402
from hvac_push.core.points import PointMeta  # noqa: E402
from hvac_push.sources.simulator import PlantModel, demo_limits  # noqa: E402

T0 = 1_800_000_000.0
#: Real alarms in the first minutes are the start-up transient, not something to predict.
WARMUP_S = 600.0
#: The warning clears as the value passes the limit; the limit alarm follows after its C{delay} (5 s).
SLACK_S = 15.0


@dataclass
class Run:
    """What one seed gave: lead times of warned crossings, missed crossings, false and true warnings."""

    leads: list[float] = field(default_factory=list)
    missed: int = 0
    warnings: int = 0
    false: int = 0
    hours: float = 0.0
    points: int = 0


Event = tuple[float, str, str, str, "float | None"]


def onsets(events: list[Event], kinds: tuple[str, ...]) -> dict[tuple[str, float | None], list[float]]:
    """Per (point, limit), the times its alarms of C{kinds} entered C{active} (from any other state).

    Keyed by the limit too, so that a warning of the low limit (a fall after a
    fault ends) never counts as a warning of the next high crossing.
    """
    found: dict[tuple[str, float | None], list[float]] = {}
    last: dict[str, str] = {}
    for ts, alarm_id, point, state, limit in events:
        kind = alarm_id.rsplit(":", 1)[1]
        if kind not in kinds:
            continue
        before = last.get(alarm_id, "normal")
        last[alarm_id] = state
        if state == "active" and before not in ("active", "acknowledged"):
            found.setdefault((point, limit), []).append(ts)
    return found


def warnings(events: list[Event], end: float) -> dict[tuple[str, float | None], list[tuple[float, float]]]:
    """Per (point, limit), the spans C{(on, off)} during which a C{predicted} condition stood.

    The engine clears it when the value passes the limit (the real alarm takes
    over) or when the crossing is no longer expected; one still on at the end
    ends at C{end}.
    """
    spans: dict[tuple[str, float | None], list[tuple[float, float]]] = {}
    since: dict[str, tuple[float, tuple[str, float | None]]] = {}
    for ts, alarm_id, point, state, limit in events:
        if not alarm_id.endswith(":predicted"):
            continue
        if state == "active" and alarm_id not in since:
            since[alarm_id] = (ts, (point, limit))
        elif state in ("returned", "normal") and alarm_id in since:
            on, key = since.pop(alarm_id)
            spans.setdefault(key, []).append((on, ts))
    for on, key in since.values():
        spans.setdefault(key, []).append((on, end))
    return spans


def slow_fault(plant_time: float) -> float:
    """The C{drift} scenario: each hour the first chiller's capacity falls from 100 % to 5 % over 40 minutes
    (fouling, a slow refrigerant leak), then the fault is fixed; its supply temperature creeps past 9 °C."""
    phase = plant_time % 3600.0
    return 1.0 - 0.95 * phase / 2400.0 if phase < 2400.0 else 1.0


def run(seed: int, hours: float, units: int, predict_within: float, window: float, scenario: str = "demo") -> Run:
    clock = Clock()
    clock.advance(T0)
    hub = Hub(epoch=f"bench-{seed}", clock=clock.seconds)
    engine = AlarmEngine(hub, clock)
    model = PlantModel(units=units, seed=seed, faults=scenario == "demo")
    if scenario == "drift":
        model.capacity_of_first = slow_fault
    watched = [p for p in model.point_ids() if demo_limits(p) is not None]
    for point_id in watched:
        hub.configure(point_id, PointMeta(limits=demo_limits(point_id)))
    settings = DerivedSettings(forecast_minutes=(5,), predict_within_min=predict_within)
    derived = DerivedPoints(hub, clock, settings, alarms=engine)
    events: list[Event] = []

    def listen(seq: int, alarm: Alarm) -> None:
        events.append((clock.seconds() - T0, alarm.id, alarm.point, alarm.state, alarm.limit))

    engine.add_listener(listen)
    rng = random.Random(seed * 104729 + 3)
    end = hours * 3600.0
    t = 0.0
    while t < end:
        dt = rng.uniform(0.5, 1.5)  # a source polled about once a second, irregularly
        model.step(dt)
        clock.advance(dt)
        t += dt
        hub.publish_many(model.sample(p, T0 + t) for p in watched)
    derived.close()
    engine.close()

    real = onsets(events, ("high", "low"))
    spans = warnings(events, end)
    result = Run(hours=hours, points=len(watched))
    # A crossing was warned of when a warning for that limit stood until (about) the crossing itself,
    # raised at most a window before it: a warning that had already cleared warned of nothing.
    for key, times in real.items():
        for at in times:
            if at < WARMUP_S:
                continue
            standing = [on for on, off in spans.get(key, []) if at - window <= on <= at and off >= at - SLACK_S]
            if standing:
                result.leads.append(at - standing[0])
            else:
                result.missed += 1
    # A warning that cleared without its limit being crossed (within the slack) was a false alarm.
    for key, found in spans.items():
        for on, off in found:
            if on < WARMUP_S:
                continue
            result.warnings += 1
            if not any(on <= r <= off + SLACK_S for r in real.get(key, [])):
                result.false += 1
    return result


def interval(values: list[float]) -> str:
    """Mean and a 95 % t-interval half-width over seeds (one value per seed)."""
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    t95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}.get(len(values), 2.0)
    half = t95 * statistics.stdev(values) / math.sqrt(len(values))
    return f"{statistics.mean(values):.2f} ± {half:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--hours", type=float, default=3.0, help="simulated hours per seed")
    parser.add_argument("--units", type=int, default=6)
    parser.add_argument("--scenario", choices=("demo", "drift"), default="demo",
                        help="demo: the simulator's sudden capacity loss (3 of every 10 min); drift: a slow one each hour")
    parser.add_argument("--predict-within", type=float, default=15.0, help="minutes (predict_within_min)")
    parser.add_argument("--window", type=float, default=None,
                        help="minutes a warning may precede its crossing (default: 2 x predict-within)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    window = 60.0 * (args.window if args.window is not None else 2 * args.predict_within)
    started = time.monotonic()
    print(f"# predicted alarm on the simulator, scenario {args.scenario}: {len(seeds)} seeds x {args.hours:g} h, {args.units} units, "
          f"predict_within_min {args.predict_within:g}, window {window / 60:g} min, warm-up {WARMUP_S / 60:g} min")
    print(f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cpus")
    print("| seed | crossings | warned | missed | lead median (min) | lead p10-p90 (min) | warnings | false | false share |")
    print("|---|---|---|---|---|---|---|---|---|")
    medians, warned_shares, false_shares, false_per_hour = [], [], [], []
    all_leads: list[float] = []
    for seed in seeds:
        r = run(seed, args.hours, args.units, args.predict_within, window, args.scenario)
        crossings = len(r.leads) + r.missed
        leads = sorted(x / 60 for x in r.leads)
        all_leads += leads
        median = statistics.median(leads) if leads else float("nan")
        deciles = statistics.quantiles(leads, n=10, method="inclusive") if len(leads) >= 2 else leads * 9
        spread = f"{deciles[0]:.1f}-{deciles[-1]:.1f}" if leads else "-"
        share = r.false / r.warnings if r.warnings else float("nan")
        print(f"| {seed} | {crossings} | {len(r.leads)} | {r.missed} | {median:.1f} | {spread} | {r.warnings} | {r.false} | "
              f"{share:.0%} |")
        if leads:
            medians.append(median)
        if crossings:
            warned_shares.append(len(r.leads) / crossings)
        if r.warnings:
            false_shares.append(share)
        false_per_hour.append(r.false / (r.hours - WARMUP_S / 3600) / r.points)
    print()
    print("| over the seeds (mean ± 95 % t-interval) | value |")
    print("|---|---|")
    print(f"| crossings warned of | {interval([100 * s for s in warned_shares])} % |")
    print(f"| median lead time | {interval(medians)} min |")
    print(f"| false warnings (share of warnings) | {interval([100 * s for s in false_shares])} % |")
    print(f"| false warnings per point-hour | {interval(false_per_hour)} |")
    if all_leads:
        print(f"| all lead times pooled: min / median / max | {min(all_leads):.1f} / {statistics.median(all_leads):.1f} / "
              f"{max(all_leads):.1f} min |")
    print(f"\n# took {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
