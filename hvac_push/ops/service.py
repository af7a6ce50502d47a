"""The assembled server as one C{MultiService}: hub, delivery, producers and listeners.

Use it from twistd (see L{hvac_push.ops.tap}) or embed it: add it to your own
application, mount L{PushService.resource} in your own C{Site}, and publish
from your own code with L{PushService.publisher} (any thread) or
L{PushService.hub} (reactor thread).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Site

from hvac_push.core.version import __version__
from hvac_push.transport.fanout import PushServerFactory
from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.transport.auth import Authenticator
from hvac_push.analytics.history import DEFAULT_WINDOW, History
from hvac_push.ops.health import Readiness, ReadinessCheck
from hvac_push.transport.limits import DEFAULT_LIMITS, Limits
from hvac_push.core.hub import Hub
from hvac_push.ops.metrics import MetricsResource, make_registry
from hvac_push.core.points import AlarmLimits
from hvac_push.analytics.staleness import DEFAULT_EXPECTED_INTERVAL, StalenessWatcher
from hvac_push.core.publisher import Producer, Publisher
from hvac_push.sources.supervisor import ProducerService, ReactorLike
from hvac_push.transport.web import GuardedSite, PushResource, make_root, make_site


class _DeliveryService(Service):
    """Starts the delivery loop; on stop, says goodbye (1001) to clients and waits, bounded."""

    def __init__(self, factory: PushServerFactory, reactor: ReactorLike, drain_timeout: float):
        self.factory = factory
        self.reactor = reactor
        self.drain_timeout = drain_timeout

    def startService(self) -> None:
        super().startService()
        self.factory.start()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self.factory.stop()
        self.factory.close_all()
        drained = self.factory.when_drained()
        if drained.called:
            return None
        timeout = self.reactor.callLater(self.drain_timeout, self._force_close)
        drained.addBoth(lambda _: timeout.cancel() if timeout.active() else None)
        return drained

    def _force_close(self) -> None:
        for client in list(self.factory.connections):
            client.abort()


class PushService(MultiService):
    """Everything hvac-push runs, in start order: delivery, producers, listeners."""

    def __init__(
        self,
        reactor: ReactorLike,
        *,
        interval: float = 0.1,
        allowed_origins: Iterable[str] = (),
        max_connections: int = 10_000,
        ws_options: Mapping[str, Any] | None = None,
        epoch: str | None = None,
        drain_timeout: float = 5.0,
        history_window: float = DEFAULT_WINDOW,
        default_interval: float = DEFAULT_EXPECTED_INTERVAL,
        alarm_ring: int = 1000,
        stale_check: float = 1.0,
        authenticator: Authenticator | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ):
        super().__init__()
        self.reactor = reactor
        self.hub = Hub(epoch, clock=reactor.seconds)
        self.factory = PushServerFactory(
            self.hub,
            reactor,
            interval=interval,
            allowed_origins=allowed_origins,
            max_connections=max_connections,
            ws_options=ws_options,
            authenticator=authenticator,
            limits=limits,
        )
        self.history = History(self.hub, window=history_window)
        self.alarms = AlarmEngine(self.hub, reactor, ring_size=alarm_ring)
        self.staleness = StalenessWatcher(
            self.hub, reactor, default_interval=default_interval, check_every=stale_check
        )
        self.factory.history = self.history
        self.factory.attach_alarms(self.alarms)
        #: Thread-safe publishing for producers and users' own threads.
        self.publisher = Publisher(self.hub, reactor)
        self.producers: list[ProducerService] = []
        _DeliveryService(self.factory, reactor, drain_timeout).setServiceParent(self)
        #: Conditions that must all hold for C{/healthz} to answer 200 (see L{add_readiness_check}).
        self.readiness = Readiness()
        self.readiness.add("started", lambda: (bool(self.running), "running" if self.running else "stopped"))
        #: This service's own Prometheus registry, served at C{/metrics}.
        self.metrics_registry = make_registry(self)

    def startService(self) -> None:
        super().startService()
        self.staleness.start()

    def stopService(self) -> Deferred[None]:
        self.staleness.stop()
        return super().stopService()

    def set_limits(self, point_id: str, limits: AlarmLimits | None) -> None:
        """Set or clear a point's alarm limits (reactor thread); they override the config."""
        self.alarms.set_limits(point_id, limits)

    def resource(self) -> PushResource:
        """The WebSocket resource, to mount at any path of your own C{Site}."""
        return PushResource(self.factory)

    def root(self) -> Resource:
        """The full resource tree (C{/ws}, C{/healthz}, C{/metrics}, C{/})."""
        return make_root(self.factory, self.health, metrics=self.metrics_resource())

    def metrics_resource(self) -> MetricsResource:
        """C{/metrics}, to mount in your own C{Site} when embedding."""
        return MetricsResource(self.metrics_registry)

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """Hold C{/healthz} at 503 until C{check()} returns C{(True, detail)}.

        C{check} is called on the reactor thread each time health is read and
        must return C{(ok, detail)} quickly; C{detail} (a short string or small
        JSON value) appears under C{checks} in the health document.
        """
        self.readiness.add(name, check)

    def remove_readiness_check(self, name: str) -> None:
        self.readiness.remove(name)

    def site(self) -> Site:
        """Our own C{Site}, which also drops connections that do not finish a request within the handshake timeout."""
        return make_site(self.root(), site_factory=self._guarded_site)

    def _guarded_site(self, root: Resource) -> Site:
        factory = self.factory
        return GuardedSite(
            root, clock=self.reactor, handshake_timeout=factory.limits.handshake_timeout, stats=factory.guard_stats
        )

    def add_producer(self, producer: Producer) -> ProducerService:
        """Run C{producer} in its own supervised thread while this service runs."""
        service = ProducerService(producer, self.publisher, self.reactor)
        service.setServiceParent(self)
        self.producers.append(service)
        return service

    def add_listener(self, description: str, site: Site | None = None) -> Service:
        """Serve C{site} (by default our own) on a strports endpoint description."""
        service = strports.service(description, site or self.site())
        service.setServiceParent(self)
        return service

    def health(self) -> dict[str, Any]:
        """The C{/healthz} document (docs/operations.md): readiness, and what each source is really doing."""
        hub = self.hub
        ready, checks = self.readiness.check()
        return {
            "ready": ready,
            "checks": checks,
            "version": __version__,
            "epoch": hub.epoch,
            "hub_version": hub.version,
            "points": len(hub),
            "points_by_status": hub.status_counts(),
            "clients": len(self.factory.clients),
            "producers": {p.producer.name: p.status.as_dict() for p in self.producers},
        }


__all__ = ["PushService"]
