"""Forecast skill against baselines: a forecast is worth publishing only while it beats them.

For each horizon, every C{every} seconds the point's forecast is remembered next
to three baseline forecasts of the same instant:

* C{last}: the last value (no change);
* C{average}: a moving average (time-weighted exponential, time constant = the horizon);
* C{cycle}: the value one C{cycle} earlier than the target instant (same time of the
  previous day, or of the simulator's ten-minute "day"; whole cycles earlier for a
  horizon longer than a cycle), when that much history exists.

When the target instant comes, each absolute error is added to a running mean
with exponential forgetting (memory C{memory} seconds). The forecast earns its
place at that horizon while it has been checked at least C{min_checks} times and
its mean absolute error is below every baseline's.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Sequence

BASELINES = ("last", "average", "cycle")
#: The lowest skill reported: ten times the best baseline's error, or worse.
MIN_SKILL = -9.0


class _Horizon:
    """Pending predictions and running error means at one horizon."""

    __slots__ = ("horizon", "pending", "errors", "weight", "average", "last_issue")

    def __init__(self, horizon: float):
        self.horizon = horizon
        #: (due ts, model forecast, baseline forecasts in BASELINES order, None if not available)
        self.pending: deque[tuple[float, float, tuple[float | None, ...]]] = deque()
        #: Forgetting sums of absolute error: the model's first, then each baseline's.
        self.errors = [0.0] * (1 + len(BASELINES))
        self.weight = [0.0] * (1 + len(BASELINES))
        self.average: float | None = None
        self.last_issue = -math.inf


class SkillGate:
    """Rolling measured skill of one point's forecasts against the baselines, per horizon."""

    __slots__ = ("cycle", "every", "forget", "min_checks", "_horizons", "_times", "_values", "_ts", "_keep")

    def __init__(
        self,
        horizons: Sequence[float],
        cycle: float | None = 86400.0,
        every: float = 30.0,
        memory: float = 6 * 3600.0,
        min_checks: int = 20,
    ):
        self.cycle = cycle
        self.every = every
        self.forget = math.exp(-every / memory)
        self.min_checks = min_checks
        self._horizons = [_Horizon(h) for h in horizons]
        #: Values kept (one per C{every}) for the C{cycle} baseline, oldest first.
        self._times: deque[float] = deque()
        self._values: deque[float] = deque()
        self._keep = (cycle or 0.0) + max(horizons, default=0.0) + every
        self._ts: float | None = None

    def update(self, ts: float, value: float, forecasts: Sequence[float]) -> None:
        """Take a sample and the forecasts made from it (one per horizon, in order)."""
        if self._ts is not None and ts <= self._ts:
            return
        previous, self._ts = self._ts, ts
        for state, forecast in zip(self._horizons, forecasts):
            pending = state.pending
            while pending and pending[0][0] <= ts:
                _, model, baselines = pending.popleft()
                self._score(state, 0, model, value)
                for index, baseline in enumerate(baselines, start=1):
                    if baseline is not None:
                        self._score(state, index, baseline, value)
            if state.average is None or previous is None:
                state.average = value
            else:
                state.average += (value - state.average) * (1.0 - math.exp(-(ts - previous) / state.horizon))
            if ts - state.last_issue >= self.every:
                state.last_issue = ts
                pending.append((ts + state.horizon, forecast, (value, state.average, self._cycle_value(ts, state.horizon))))
        if self.cycle is not None and (not self._times or ts - self._times[-1] >= self.every):
            self._times.append(ts)
            self._values.append(value)
            while self._times and self._times[0] < ts - self._keep:
                self._times.popleft()
                self._values.popleft()

    def _score(self, state: _Horizon, index: int, predicted: float, actual: float) -> None:
        state.errors[index] = self.forget * state.errors[index] + abs(predicted - actual)
        state.weight[index] = self.forget * state.weight[index] + 1.0

    def _cycle_value(self, now: float, horizon: float) -> float | None:
        """The kept values interpolated at C{now + horizon} minus whole cycles (as few as reach back
        to C{now} or before: nothing from the future), if the history reaches back that far."""
        if self.cycle is None or not self._times:
            return None
        at = now + horizon - self.cycle * max(1, math.ceil(horizon / self.cycle))
        times = self._times
        if at < times[0]:
            return None
        index = bisect.bisect_right(times, at) - 1
        if index + 1 >= len(times):
            return self._values[index]
        t0, t1 = times[index], times[index + 1]
        v0, v1 = self._values[index], self._values[index + 1]
        return v0 + (v1 - v0) * (at - t0) / (t1 - t0)

    def errors(self, index: int) -> dict[str, float]:
        """Mean absolute errors at horizon number C{index}: C{"forecast"} and each baseline that has been scored."""
        state = self._horizons[index]
        names = ("forecast",) + BASELINES
        return {name: state.errors[i] / state.weight[i] for i, name in enumerate(names) if state.weight[i] > 0}

    def checks(self, index: int) -> float:
        """How many checks (with forgetting) the forecast at horizon number C{index} has had."""
        return self._horizons[index].weight[0]

    def skill(self, index: int) -> float | None:
        """The skill score at horizon number C{index}: 1 - forecast error / best baseline error.

        Above 0 the forecast beats every baseline (1: perfect); at or below 0 it does not.
        Held at L{MIN_SKILL} or more (a baseline with no error would make it minus infinity).
        L{None} until it has had C{min_checks} checks, or while no baseline has been scored.
        """
        if self.checks(index) < self.min_checks:
            return None
        errors = self.errors(index)
        model = errors.pop("forecast")
        if not errors:
            return None
        best = min(errors.values())
        if best <= 0.0:
            return 0.0 if model <= 0.0 else MIN_SKILL
        return max(MIN_SKILL, 1.0 - model / best)

    def earns(self, index: int) -> bool:
        """Whether the forecast at horizon number C{index} beats every baseline, measured on enough checks."""
        if self.checks(index) < self.min_checks:
            return False
        errors = self.errors(index)
        model = errors.pop("forecast")
        return all(model < baseline for baseline in errors.values())


__all__ = ["BASELINES", "MIN_SKILL", "SkillGate"]
