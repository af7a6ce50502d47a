"""Counters and tiny histograms the transport bumps on its hot path, read by C{/metrics} at scrape time.

Plain ints and pre-bucketed lists: the fan-out never touches
C{prometheus_client}; L{hvac_push.ops.metrics} turns these into metric
families only when scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterable, Sequence

from hvac_push.core.points import Point

#: Seconds; one flush is a group-by plus one encode per group plus the writes.
FLUSH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Seconds from a point's C{ts} (when the source measured it) to the frame being written.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Buckets:
    """A pre-bucketed histogram: a list of counts and a sum, nothing else.

    C{observe} is one C{bisect} and two additions. Counts are per bucket (not
    cumulative); L{cumulative} does the running total at scrape time.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(sorted(bounds))
        #: One count per bound, plus the last for values above every bound (+Inf).
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (le=).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_ages(self, now: float, points: Iterable[Point]) -> None:
        """Observe C{now - point.ts} for each point whose status is C{ok}.

        Points marked C{stale} or C{fault} keep the C{ts} of their last good
        reading, so their age says nothing about delivery and is left out.
        A C{ts} ahead of C{now} (a source's clock running fast) counts as 0.
        """
        bounds = self.bounds
        counts = self.counts
        total = 0.0
        for point in points:
            if point.status == "ok":
                age = now - point.ts
                if age < 0.0:
                    age = 0.0
                counts[bisect_left(bounds, age)] += 1
                total += age
        self.sum += total

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """C{(le, count)} pairs as Prometheus wants them, ending with C{+Inf}."""
        pairs = []
        running = 0
        for bound, count in zip(self.bounds, self.counts):
            running += count
            pairs.append((_le(bound), running))
        pairs.append(("+Inf", running + self.counts[-1]))
        return pairs


def _le(bound: float) -> str:
    return repr(float(bound))



class DeliveryStats:
    """Counters the health page and metrics read; plain ints, cheap to bump."""

    def __init__(self) -> None:
        self.ticks = 0
        self.flushes = 0
        self.frames_encoded = 0
        self.messages_sent = 0
        self.bytes_sent = 0
        self.skipped_paused = 0
        self.handshakes_denied: dict[int, int] = {}
        self.handshakes_accepted = 0
        #: Observed once per flush, and once per point per group frame (see L{hvac_push.ops.metrics}).
        self.flush_seconds = Buckets(FLUSH_BUCKETS)
        self.latency_seconds = Buckets(LATENCY_BUCKETS)


class GuardStats:
    """Counters for what the limits did; plain ints."""

    def __init__(self) -> None:
        self.rate_limited = 0
        self.policy_closes = 0
        self.slow_closes = 0
        self.expired_closes = 0
        self.aborted = 0
        self.handshake_timeouts = 0
        self.forbidden = 0


__all__ = ["Buckets", "DeliveryStats", "FLUSH_BUCKETS", "GuardStats", "LATENCY_BUCKETS"]
