"""The assembled server as one C{MultiService}: hub, delivery, producers and listeners.

Use it from twistd (see L{hvac_push.ops.tap}) or embed it: add it to your own
application, mount L{PushService.resource} in your own C{Site}, and publish
from your own code with L{PushService.publisher} (any thread) or
L{PushService.hub} (reactor thread).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Site

from hvac_push.core.version import __version__
from hvac_push.transport.fanout import PushServerFactory
from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.transport.auth import Authenticator
from hvac_push.analytics.history import DEFAULT_WINDOW, History
from hvac_push.ops.health import Readiness, ReadinessCheck
from hvac_push.ops.listeners import ListenerService
from hvac_push.transport.limits import DEFAULT_LIMITS, Limits
from hvac_push.core.hub import Hub
from hvac_push.ops.metrics import MetricsResource, make_registry
from hvac_push.ops.port_file import PortFile
from hvac_push.core.points import AlarmLimits
from hvac_push.analytics.staleness import DEFAULT_EXPECTED_INTERVAL, StalenessWatcher
from hvac_push.core.publisher import Producer, Publisher
from hvac_push.sources.supervisor import ProducerService, ReactorLike
from hvac_push.transport.tls import MODERN_CIPHERS, server_endpoint
from hvac_push.transport.web import GuardedSite, PushResource, make_root, make_site
from hvac_push.transport.api import make_api
from hvac_push.store.interface import Retention, Store
from hvac_push.store.metrics import StoreCollector
from hvac_push.store.recorder import StoreService


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
        # On time-out the Deferred of _force_close is chained in: this fires once the aborted clients are gone.
        stopped: Deferred[Any] = drained.addTimeout(
            self.drain_timeout, self.reactor, onTimeoutCancel=self._force_close
        )
        return stopped

    def _force_close(self, result: object, timeout: float) -> Deferred[None]:
        """The drain timed out: abort who is left, and finish once they are gone."""
        for client in list(self.factory.connections):
            client.abort()
        return self.factory.when_drained()


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
        tls_ciphers: str | None = MODERN_CIPHERS,
        private_status: bool = False,
        store: Store | None = None,
        retention: Retention = Retention(),
        coalesce: float = 0.0,
    ):
        super().__init__()
        self.reactor = reactor
        #: Under twistd (set by L{hvac_push.ops.tap}): a port in use is one log line and exit status 1, not a traceback.
        self.exit_on_listen_failure = False
        #: OpenSSL cipher string for TLS 1.2 on C{ssl:} listeners; L{None}: Twisted's defaults.
        self.tls_ciphers = tls_ciphers
        #: Serve C{/metrics} and C{/healthz} details only with a token the authenticator accepts.
        if private_status and authenticator is None:
            raise ValueError("private_status needs an authenticator")
        self.private_status = private_status
        self.hub = Hub(epoch, clock=reactor.seconds)
        #: Durable trends, alarm journal and last values (docs/operations.md); L{None}: memory only.
        self.store: StoreService | None = None
        if store is not None:
            self.store = StoreService(store, reactor, retention=retention)
            # Before anything follows the hub: restored values raise no alarm and are not written back.
            self.store.restore(self.hub)
            self.store.setServiceParent(self)  # first in, last out: it writes what the others did
        self.factory = PushServerFactory(
            self.hub,
            reactor,
            interval=interval,
            allowed_origins=allowed_origins,
            max_connections=max_connections,
            ws_options=ws_options,
            authenticator=authenticator,
            limits=limits,
            coalesce=coalesce,
        )
        self.history = History(self.hub, window=history_window)
        #: Set before adding listeners to write their bound ports to a file (--port-file).
        self.port_file: PortFile | None = None
        self.alarms = AlarmEngine(self.hub, reactor, ring_size=alarm_ring)
        self.staleness = StalenessWatcher(
            self.hub, reactor, default_interval=default_interval, check_every=stale_check
        )
        if self.store is not None:
            self.store.restore_alarms(self.alarms)
            self.store.preload(self.history, reactor.seconds())
            self.store.follow(self.hub, self.alarms)
            # The start-up connection is not carried across twistd's fork; the threads open their own.
            self.store.store.close()
        self.factory.history = self.history
        self.factory.store = self.store
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
        if self.store is not None:
            self.metrics_registry.register(StoreCollector(self.store.writer))
            self.readiness.add("store", self.store.health)

    def startService(self) -> None:
        super().startService()
        self.staleness.start()

    def stopService(self) -> Deferred[None]:
        """Stop; the alarm engine's timers (delays, shelve ends) go with it: the journal keeps what they hold."""
        self.staleness.stop()
        stopped: Deferred[None] = super().stopService()
        self.alarms.close()
        return stopped

    def set_alarm_limits(self, point_id: str, limits: AlarmLimits | None) -> None:
        """Set or clear a point's alarm limits (reactor thread); they override the config.

        Not to be confused with C{limits=}, the per-client limits of the constructor.
        """
        self.alarms.set_limits(point_id, limits)

    def resource(self) -> PushResource:
        """The WebSocket resource, to mount at any path of your own C{Site}."""
        return PushResource(self.factory)

    def root(self) -> Resource:
        """The full resource tree (C{/ws}, C{/healthz}, C{/metrics}, C{/})."""
        operators = self.factory.authenticator if self.private_status else None
        return make_root(
            self.factory, self.health, metrics=self.metrics_resource(), api=self.api_resource(), operators=operators
        )

    def api_resource(self) -> Resource | None:
        """C{/api} (history and the alarm journal, docs/api.md) when there is a store; else L{None}."""
        if self.store is None:
            return None
        return make_api(self.store, self.factory.authenticator, self.reactor)

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

    def endpoint(self, description: str) -> IStreamServerEndpoint:
        """The endpoint a strports description names; C{ssl:} ones get the TLS policy (L{hvac_push.transport.tls})."""
        endpoint = server_endpoint(self.reactor, description, self.tls_ciphers)
        # --port-file (hvac_push.ops.port_file): report the port each listener really bound.
        return self.port_file.wrap(endpoint) if self.port_file is not None else endpoint

    def add_listener(self, description: str, site: Site | None = None) -> Service:
        """Serve C{site} (by default our own) on a strports endpoint description.

        Once listening it logs one line with its URLs; a port that cannot be
        bound fails startService, or (C{exit_on_listen_failure}, under twistd)
        is one error line and exit status 1.
        """
        service = ListenerService(
            self.endpoint(description), site or self.site(), description, exit_on_failure=self.exit_on_listen_failure
        )
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
