"""Prometheus metrics, read from the server's own counters at scrape time.

The hot path never touches C{prometheus_client}: delivery bumps plain ints in
L{hvac_push.delivery.DeliveryStats} and drops observations into two tiny
L{Buckets} histograms. A L{PushCollector} registered in a per-service
C{CollectorRegistry} turns all of it into metric families only when
C{/metrics} is scraped, so a server with no scraper pays nothing and tests can
build as many services as they like (the global registry is never used).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from twisted.web.resource import Resource
from twisted.web.server import Request

if TYPE_CHECKING:
    from hvac_push.service import PushService

#: Seconds; one flush is a group-by plus one encode per group plus the writes.
FLUSH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Seconds from a point's C{ts} (when the source measured it) to the frame being written.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: The reason label for each HTTP status a refused handshake gets.
DENIED_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "origin",
    404: "not_found",
    429: "rate_limited",
    500: "error",
    503: "capacity",
}

#: Refusal codes reported (as 0) even before the first refusal.
ALWAYS_REPORTED = (400, 401, 403, 500, 503)

PRODUCER_STATES = ("idle", "running", "backoff", "stopped")


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

    def observe_ages(self, now: float, points: Iterable[Any]) -> None:
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


def denied_reason(code: int) -> str:
    """The label for a refused handshake's HTTP status (unknown codes get C{http_<code>})."""
    return DENIED_REASONS.get(code, f"http_{code}")


class PushCollector:
    """Builds every hvac-push metric family from one L{PushService}'s live state."""

    def __init__(self, service: "PushService"):
        self.service = service

    def describe(self) -> list[Any]:
        # Returning nothing keeps registration from calling collect() eagerly.
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        service = self.service
        factory = service.factory
        stats = factory.stats
        hub = service.hub

        def counter(name: str, doc: str, value: float) -> Any:
            return CounterMetricFamily(f"hvacpush_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> Any:
            return GaugeMetricFamily(f"hvacpush_{name}", doc, value=value)

        def histogram(name: str, doc: str, buckets: Buckets) -> Any:
            return HistogramMetricFamily(
                f"hvacpush_{name}", doc, buckets=buckets.cumulative(), sum_value=buckets.sum
            )

        from hvac_push import __version__

        yield InfoMetricFamily(
            "hvacpush_build", "hvac-push version and hub epoch", value={"version": __version__, "epoch": hub.epoch}
        )
        ready, _ = service.readiness.check()
        yield gauge("ready", "1 when /healthz reports ready, else 0", 1 if ready else 0)

        # -- connections and handshakes
        yield gauge("connections", "TCP connections to the WebSocket endpoint, handshaking ones included",
                    len(factory.connections))
        yield gauge("clients", "Open WebSocket clients receiving updates", len(factory.clients))
        yield counter("handshakes_accepted", "WebSocket handshakes accepted", stats.handshakes_accepted)
        denied = CounterMetricFamily(
            "hvacpush_handshakes_denied", "WebSocket handshakes refused, by reason", labels=["reason", "code"]
        )
        # The usual codes are always present, so that rate() works from the first scrape.
        for code in sorted(set(ALWAYS_REPORTED) | set(stats.handshakes_denied)):
            denied.add_metric([denied_reason(code), str(code)], stats.handshakes_denied.get(code, 0))
        yield denied

        # -- delivery
        yield counter("messages_sent", "Update messages written to clients", stats.messages_sent)
        yield counter("bytes_sent", "Bytes of update frames written to clients", stats.bytes_sent)
        yield counter("frames_encoded", "Update frames encoded (one per group of clients)", stats.frames_encoded)
        yield counter("ticks", "Delivery poll ticks", stats.ticks)
        yield counter("flushes", "Flushes that had at least one client to bring up to date", stats.flushes)
        yield counter("clients_skipped_slow",
                      "Times a client was skipped by a flush because it was not reading (paused)",
                      stats.skipped_paused)
        yield histogram("flush_duration_seconds", "Time one flush took (group, encode, write)",
                        stats.flush_seconds)
        yield histogram("delivery_latency_seconds",
                        "From a point's ts to its frame being written, once per point per frame (status ok only)",
                        stats.latency_seconds)

        # -- hub
        yield gauge("hub_version", "The hub version: number of accepted changes this epoch", hub.version)
        by_status = GaugeMetricFamily("hvacpush_points", "Current points, by status", labels=["status"])
        counts = _count_statuses(hub.points())
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield by_status
        yield counter("samples_rejected", "Samples the hub refused as invalid", getattr(hub, "rejected", 0))

        # -- producers
        state = GaugeMetricFamily(
            "hvacpush_producer_state", "1 for the state each producer is in", labels=["producer", "state"]
        )
        restarts = CounterMetricFamily(
            "hvacpush_producer_restarts", "Producer restarts after a crash or early return", labels=["producer"]
        )
        for producer in service.producers:
            current = producer.status
            known = PRODUCER_STATES if current.state in PRODUCER_STATES else (*PRODUCER_STATES, current.state)
            for name in known:
                state.add_metric([current.name, name], 1 if current.state == name else 0)
            restarts.add_metric([current.name], current.restarts)
        yield state
        yield restarts


def _count_statuses(points: Iterable[Any]) -> dict[str, int]:
    from hvac_push.points import STATUSES

    counts = dict.fromkeys(STATUSES, 0)
    for point in points:
        counts[point.status] = counts.get(point.status, 0) + 1
    return counts


def make_registry(service: "PushService") -> Any:
    """A fresh C{CollectorRegistry} holding only this service's collector."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PushCollector(service))
    return registry


class MetricsResource(Resource):
    """C{/metrics}: the registry in Prometheus text format (or OpenMetrics when asked)."""

    isLeaf = True

    def __init__(self, registry: Any):
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        from prometheus_client.exposition import choose_encoder

        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        body: bytes = encoder(self._registry)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body

    render_HEAD = render_GET


__all__ = ["Buckets", "MetricsResource", "PushCollector", "make_registry", "denied_reason"]
