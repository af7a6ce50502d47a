"""Prometheus metrics, read from the server's own counters at scrape time.

The hot path never touches C{prometheus_client}: delivery bumps plain ints in
L{hvac_push.transport.stats.DeliveryStats} and drops observations into two tiny
L{Buckets} histograms. A L{PushCollector} registered in a per-service
C{CollectorRegistry} turns all of it into metric families only when
C{/metrics} is scraped, so a server with no scraper pays nothing and tests can
build as many services as they like (the global registry is never used).
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

from twisted.web.resource import Resource
from twisted.web.server import Request

from hvac_push.core.version import __version__
from hvac_push.core.hub import Hub
from hvac_push.analytics.alarms import LISTED, AlarmEngine
from hvac_push.core.points import STATUSES, Point
from hvac_push.ops.health import Readiness
from hvac_push.sources.supervisor import ProducerService
from hvac_push.transport.fanout import PushServerFactory
from hvac_push.transport.stats import Buckets


class MetricsSource(Protocol):
    """What the collector reads at scrape time (a L{hvac_push.ops.service.PushService} provides it)."""

    @property
    def hub(self) -> Hub: ...

    @property
    def factory(self) -> PushServerFactory: ...

    @property
    def readiness(self) -> Readiness: ...

    @property
    def producers(self) -> Sequence[ProducerService]: ...

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


def denied_reason(code: int) -> str:
    """The label for a refused handshake's HTTP status (unknown codes get C{http_<code>})."""
    return DENIED_REASONS.get(code, f"http_{code}")


class PushCollector:
    """Builds every hvac-push metric family from one service's live state (a L{MetricsSource})."""

    def __init__(self, service: MetricsSource):
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

        yield InfoMetricFamily(
            "hvacpush_build", "hvac-push version and hub epoch", value={"version": __version__, "epoch": hub.epoch}
        )
        ready, _ = service.readiness.check()
        yield gauge("ready", "1 when /healthz reports ready, else 0", 1 if ready else 0)

        # -- connections and handshakes
        yield gauge("connections", "TCP connections to the WebSocket endpoint, handshaking ones included",
                    len(factory.connections))
        yield gauge("clients", "Open WebSocket clients receiving updates", len(factory.clients))
        subscribed = [len(hub.points(client.subscription)) for client in factory.clients]
        yield gauge("subscribed_points", "Points matched by the subscriptions of all open clients, summed",
                    sum(subscribed))
        yield gauge("subscribed_points_max", "Points matched by the widest subscription of one open client",
                    max(subscribed, default=0))
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
        for status, count in hub.status_counts().items():
            by_status.add_metric([status], count)
        yield by_status
        yield counter("samples_rejected", "Samples the hub refused as invalid", hub.rejected)

        # -- producers
        state = GaugeMetricFamily(
            "hvacpush_producer_state", "1 for the state each producer is in", labels=["producer", "state"]
        )
        restarts = CounterMetricFamily(
            "hvacpush_producer_restarts", "Producer restarts after a crash or early return", labels=["producer"]
        )
        connected = GaugeMetricFamily(
            "hvacpush_producer_connected", "1 while the source reaches its device or broker", labels=["producer"]
        )
        last_sample = GaugeMetricFamily(
            "hvacpush_producer_last_sample_timestamp_seconds",
            "When the source last handed samples over (epoch seconds; absent before the first)",
            labels=["producer"],
        )
        errors = CounterMetricFamily(
            "hvacpush_source_errors",
            "Failed reads and dropped messages, by source and reason "
            "(Modbus: unreachable, decode, and one per exception code: busy, illegal_address, "
            "gateway_path_unavailable, gateway_target_failed...; MQTT: malformed, path_missing, "
            "value_unmapped, bad_value)",
            labels=["producer", "reason"],
        )
        for producer in service.producers:
            current = producer.status
            known = PRODUCER_STATES if current.state in PRODUCER_STATES else (*PRODUCER_STATES, current.state)
            for name in known:
                state.add_metric([current.name, name], 1 if current.state == name else 0)
            restarts.add_metric([current.name], current.restarts)
            connected.add_metric([current.name], 1 if current.connected else 0)
            if current.last_sample is not None:
                last_sample.add_metric([current.name], current.last_sample)
            for reason, count in sorted(current.errors().items()):
                errors.add_metric([current.name, reason], count)
        yield state
        yield restarts
        yield connected
        yield last_sample
        yield errors
        yield from _alarm_families(factory.alarms)


def _alarm_families(alarms: AlarmEngine | None) -> Iterator[Any]:
    """Alarm load against ISA-18.2's benchmark of about one alarm per 10 minutes per operator."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    if alarms is None:
        return
    yield GaugeMetricFamily(
        "hvacpush_alarm_rate_10m", "Alarms annunciated (entered active) in the last 10 minutes", value=alarms.rate()
    )
    raised = CounterMetricFamily(
        "hvacpush_alarms_annunciated", "Alarms annunciated (entered active), by ISA-18.2 priority", labels=["priority"]
    )
    for priority, count in alarms.counts.annunciated.items():
        raised.add_metric([priority], count)
    yield raised
    yield CounterMetricFamily("hvacpush_alarms_suppressed", "Per-point alarms a source alarm stood for (floods)",
                              value=alarms.counts.suppressed)
    yield CounterMetricFamily("hvacpush_alarms_shelved", "Shelve requests", value=alarms.counts.shelved)
    listed = GaugeMetricFamily("hvacpush_alarms_listed", "Listed alarms, by state", labels=["state"])
    by_state = dict.fromkeys(LISTED, 0)
    for alarm in alarms.alarms.values():
        by_state[alarm.state] = by_state.get(alarm.state, 0) + 1
    for state, count in by_state.items():
        listed.add_metric([state], count)
    yield listed


def make_registry(service: MetricsSource) -> Any:
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


__all__ = ["MetricsResource", "PushCollector", "make_registry", "denied_reason"]
