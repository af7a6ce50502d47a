"""Short-term temperature forecasts: Holt's damped-trend smoothing in continuous time.

HVAC temperatures arrive at irregular intervals (a COV source reports when a
value moves, a poller when its turn comes), so the textbook Holt recursions,
which assume one sample per fixed step, are rewritten in continuous time:

* the level and trend are smoothed with time constants instead of fixed
  weights: a sample C{dt} seconds after the previous one gets the weights
  C{alpha = 1 - exp(-dt / tau_level)} and C{beta = 1 - exp(-dt / tau_trend)},
  so ten samples 0.1 s apart move the state as much as one sample 1 s later
  (the same rule as an RC low-pass filter);
* the trend is damped with a time constant C{tau_damp}: it decays as
  C{exp(-h / tau_damp)}, so the forecast C{h} seconds ahead is

      level + trend * tau_damp * (1 - exp(-h / tau_damp))

  which starts along the trend and flattens towards
  C{level + trend * tau_damp}. Gardner's damped trend is the standard cure for
  Holt's habit of over-shooting at long horizons; with the time constants
  here it is its continuous-time version (C{phi = exp(-1 / tau_damp)} per second).

Why smoothing this heavy (minutes, not seconds): on/off compressors make
supply and return temperatures saw-tooth around the setpoint with a period of
a minute or two. The last value (the "naive" forecast) carries the phase of
that cycle, which is meaningless 15 minutes later; a level smoothed over a few
cycles is the cycle's mean, which is what the temperature will be near. The
smoothed level alone already beats the last value by 25-33 % at 5 and 15
minutes, but only by 3 % at 30 minutes, so L{Forecaster} adds a learned
correction: per horizon, how much of the current deviation from the level
persists (or reverses) that far ahead, fitted online from the point's own
past forecast errors. That takes 30 minutes to 13 % and 5 and 15 minutes to
36-38 %. The time constants were chosen with C{benchmarks/forecast_accuracy.py
--tune} on training seeds (101-103) and the figures measured on others (1-5);
see C{docs/performance.md} ("Forecast accuracy").

Pure and clock-free: the caller passes each sample's own timestamp.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

#: Defaults chosen with benchmarks/forecast_accuracy.py (see docs/performance.md).
DEFAULT_TAU_LEVEL_S = 600.0
DEFAULT_TAU_TREND_S = 900.0
DEFAULT_TAU_DAMP_S = 300.0


@dataclass(frozen=True, slots=True)
class HoltParams:
    """Time constants (seconds) of the level, the trend and the trend's damping."""

    tau_level: float = DEFAULT_TAU_LEVEL_S
    tau_trend: float = DEFAULT_TAU_TREND_S
    tau_damp: float = DEFAULT_TAU_DAMP_S
    #: A silence longer than this restarts the smoother from the next sample:
    #: a level and trend that old say nothing about the present.
    max_gap: float = 600.0

    def __post_init__(self) -> None:
        for name in ("tau_level", "tau_trend", "tau_damp", "max_gap"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")


class DampedHolt:
    """The smoothing state of one series: level, trend (per second) and the last sample time."""

    __slots__ = ("params", "level", "trend", "ts", "samples")

    def __init__(self, params: HoltParams = HoltParams()):
        self.params = params
        self.level = 0.0
        self.trend = 0.0
        #: Timestamp of the last sample taken in; None before the first.
        self.ts: float | None = None
        #: Samples taken in since the last (re)start.
        self.samples = 0

    def update(self, ts: float, value: float) -> bool:
        """Take in one sample; return False (and change nothing) if it is not newer than the last."""
        last = self.ts
        if last is not None and ts <= last:
            return False
        if last is None or ts - last > self.params.max_gap:
            self.level, self.trend, self.ts, self.samples = float(value), 0.0, ts, 1
            return True
        dt = ts - last
        p = self.params
        predicted = self.level + self._drift(dt)
        trend_now = self.trend * math.exp(-dt / p.tau_damp)
        alpha = 1.0 - math.exp(-dt / p.tau_level)
        level = predicted + alpha * (value - predicted)
        beta = 1.0 - math.exp(-dt / p.tau_trend)
        self.trend = trend_now + beta * ((level - self.level) / dt - trend_now)
        self.level = level
        self.ts = ts
        self.samples += 1
        return True

    def _drift(self, horizon: float) -> float:
        tau = self.params.tau_damp
        return self.trend * tau * (1.0 - math.exp(-horizon / tau))

    def forecast(self, horizon: float) -> float:
        """The value expected C{horizon} seconds after the last sample."""
        return self.level + self._drift(horizon)

    def seconds_to(self, limit: float) -> float | None:
        """Seconds until the level reaches C{limit} if the current trend holds (undamped).

        0 if the level is exactly at it; L{None} if the trend is flat or
        points away from it (including a level already past it: callers
        check that themselves).
        """
        gap = limit - self.level
        if self.trend == 0 or (gap > 0) != (self.trend > 0):
            return 0.0 if gap == 0 else None
        return gap / self.trend


class _Persistence:
    """How much of today's deviation from the level is still there C{horizon} seconds later.

    An online least-squares fit, with exponential forgetting, of the error the
    smoothed forecast made C{horizon} seconds ahead against the deviation
    C{value - level} at the time it was made: C{error ~ gain * deviation}.
    """

    __slots__ = ("horizon", "pending", "sdd", "sde", "last_issue")

    def __init__(self, horizon: float):
        self.horizon = horizon
        #: (due ts, deviation at issue, smoothed forecast for the due ts), oldest first.
        self.pending: deque[tuple[float, float, float]] = deque()
        self.sdd = 0.0
        self.sde = 0.0
        self.last_issue = -math.inf

    def gain(self, min_weight: float) -> float:
        if self.sdd <= min_weight:
            return 0.0
        return max(-1.0, min(1.0, self.sde / self.sdd))


class Forecaster:
    """L{DampedHolt} plus a learned correction for the deviation from the level.

    The smoothed level is the best guess for a horizon much longer than the
    local wiggles; for shorter ones, or for slow periodic swings (a daily load
    cycle), part of the current deviation from the level persists, or turns
    into its opposite. For each horizon a gain is learned online, by least
    squares with forgetting, from the forecasts this point's own past actually
    got wrong, and the forecast becomes

        smoothed(h) + gain(h) * (last value - level)

    With no history the gain is 0 (pure damped Holt). It is clamped to [-1, 1].
    """

    __slots__ = ("holt", "learners", "learn_every", "forget", "last_value", "_min_weight")

    def __init__(
        self,
        horizons: tuple[float, ...],
        params: HoltParams = HoltParams(),
        learn_every: float = 30.0,
        memory: float = 6 * 3600.0,
    ):
        self.holt = DampedHolt(params)
        self.learners = {h: _Persistence(h) for h in horizons}
        self.learn_every = learn_every
        #: Weight each past pair keeps after another one is added: forgets over ~C{memory} seconds.
        self.forget = math.exp(-learn_every / memory)
        self.last_value = 0.0
        # Learn nothing from too small a deviation energy (a constant signal).
        self._min_weight = 1e-6

    @property
    def ts(self) -> float | None:
        return self.holt.ts

    def update(self, ts: float, value: float) -> bool:
        restarted = self.holt.ts is None or ts - self.holt.ts > self.holt.params.max_gap
        if not self.holt.update(ts, value):
            return False
        self.last_value = float(value)
        for learner in self.learners.values():
            if restarted:
                learner.pending.clear()
            pending = learner.pending
            while pending and pending[0][0] <= ts:
                _, deviation, predicted = pending.popleft()
                error = value - predicted
                learner.sdd = self.forget * learner.sdd + deviation * deviation
                learner.sde = self.forget * learner.sde + deviation * error
            if ts - learner.last_issue >= self.learn_every:
                learner.last_issue = ts
                deviation = value - self.holt.level
                pending.append((ts + learner.horizon, deviation, self.holt.forecast(learner.horizon)))
        return True

    def forecast(self, horizon: float) -> float:
        """The value expected C{horizon} seconds after the last sample."""
        base = self.holt.forecast(horizon)
        learner = self.learners.get(horizon)
        if learner is None:
            return base
        return base + learner.gain(self._min_weight) * (self.last_value - self.holt.level)
