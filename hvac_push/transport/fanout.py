"""Delivery: the WebSocket factory and the tick that brings every client up to date.

Clients that are at the same version with the same subscription form one
group; each group gets one encoded, pre-framed message that is written to all
its members. A client the transport has paused is skipped, and because its
C{last_version} does not move, the first tick after it resumes sends it one
update with the newest state of everything it missed: conflation, not a queue.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from hvac_push.transport import wire
from hvac_push.analytics.alarms import Alarm, AlarmEngine
from hvac_push.transport.auth import Authenticator
from hvac_push.analytics.history import History
from hvac_push.store.recorder import StoreService
from hvac_push.transport.guard import ConnectionGuard
from hvac_push.transport.interface import Client
from hvac_push.transport.limits import DEFAULT_LIMITS, Limits
from hvac_push.core.hub import Hub
from hvac_push.transport.stats import DeliveryStats, GuardStats
from hvac_push.transport.lean import LeanProtocols
from hvac_push.transport.protocol import PushServerProtocol
from hvac_push.transport.rounds import DEFAULT_SLICE_CLIENTS, DeliveryRounds
from hvac_push.transport.snapshots import SnapshotCache
from hvac_push.transport.wsoptions import apply_protocol_options

GOING_AWAY = 1001


class PushServerFactory(WebSocketServerFactory):
    """Holds the clients and runs the delivery loop for one hub.

    Data reaches clients two ways: a flush scheduled as soon as the hub
    changes (latency), and a L{LoopingCall} every C{interval} seconds that
    polls every client's version (the guarantee: nobody waits longer).
    """

    protocol = PushServerProtocol  # type: ignore[assignment]
    _log = Logger()

    def __init__(
        self,
        hub: Hub,
        reactor: IReactorTime,
        *,
        interval: float = 0.1,
        allowed_origins: Iterable[str] = (),
        max_connections: int = 10_000,
        ws_options: Mapping[str, Any] | None = None,
        url: str | None = None,
        authenticator: Authenticator | None = None,
        limits: Limits = DEFAULT_LIMITS,
        slice_clients: int = DEFAULT_SLICE_CLIENTS,
        coalesce: float = 0.0,
    ):
        super().__init__(url, reactor=reactor)
        # The limits set Autobahn's size and handshake options; explicit ws_options win.
        apply_protocol_options(self, {**limits.protocol_options(), **(ws_options or {})})
        #: Checks handshake tokens (L{hvac_push.transport.auth}); L{None} admits everyone with full rights.
        self.authenticator = authenticator
        self.limits = limits
        #: Per-IP counts, paused clients and the counters of L{hvac_push.transport.limits}.
        self.guard = ConnectionGuard(limits, reactor)
        self.hub = hub
        self._clock = reactor
        self.interval = interval
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.max_connections = max_connections
        #: Every connection from TCP accept to close (handshaking ones included).
        self.connections: set[Client] = set()
        #: Connections past the handshake that receive updates.
        self.clients: set[Client] = set()
        self.stats = DeliveryStats()
        self._pending: IDelayedCall | None = None
        #: Seconds a flush waits after the first change, so the changes of that window share one
        #: frame per client (one C{send} instead of several); 0 flushes on the next reactor turn.
        self.coalesce = coalesce
        self._loop = LoopingCall(self.tick)
        self._loop.clock = reactor
        self._drained: list[Deferred[None]] = []
        #: Opening snapshots shared by clients that open within a second (L{hvac_push.transport.snapshots}).
        self.snapshots = SnapshotCache(reactor.seconds)
        #: The sliced delivery rounds (at most C{slice_clients} clients per reactor turn).
        self.rounds = DeliveryRounds(
            hub, reactor, self.stats, lambda: self.clients, self.prepareMessage, self._flush_filtered, slice_clients
        )
        #: Optional parts, attached by L{hvac_push.ops.service.PushService}.
        self.alarms: AlarmEngine | None = None
        self.history: History | None = None
        #: The durable store: ranged C{history} requests and journal-gated confirmations.
        self.store: StoreService | None = None
        #: Equipment kinds the plant file declares, by C{"site/unit"} (others are read from unit names).
        self.unit_kinds: dict[str, str] = {}
        self._lean_protocols = LeanProtocols()
        hub.add_listener(self.wake)

    def buildProtocol(self, addr: Any) -> Any:
        """Each connection reads the factory's options from its class instead of copying them (L{LeanProtocols})."""
        return self._lean_protocols.build(self)

    @property
    def guard_stats(self) -> GuardStats:
        """What the limits did (L{hvac_push.transport.stats.GuardStats})."""
        return self.guard.stats

    def now(self) -> float:
        """The reactor's clock (wall-clock seconds under a real reactor)."""
        return self._clock.seconds()

    def attach_alarms(self, alarms: AlarmEngine) -> None:
        self.alarms = alarms
        alarms.add_listener(self.send_alarm)

    def send_alarm(self, seq: int, alarm: Alarm) -> None:
        """Deliver one alarm transition at once to every client that sees its point.

        Pending point updates go first, so a client never sees an alarm about
        a value it has not been sent yet. Only a scheduled flush means there
        is something pending, so a burst of alarms from one batch costs one
        flush, not one walk over every client per alarm.
        """
        if self._pending is not None:
            self._pending.cancel()
            self._flush_now()
        self.rounds.finish()
        payload = wire.encode_alarm(seq, alarm)
        for client in list(self.clients):
            if client.may_see(alarm.point):
                client.send_alarm_frame(seq, payload)

    # -- admission (called from the protocol's handshake) --------------------

    def origin_allowed(self, origin: str | None) -> bool:
        """With no allow-list any Origin passes; clients that send none (scripts) always do."""
        if not self.allowed_origins or not origin:
            return True
        return origin.rstrip("/").lower() in self.allowed_origins

    def at_capacity(self) -> bool:
        return len(self.clients) >= self.max_connections

    def note_denied(self, code: int) -> None:
        denied = self.stats.handshakes_denied
        denied[code] = denied.get(code, 0) + 1

    # -- bookkeeping ----------------------------------------------------------

    def connection_made(self, client: Client) -> None:
        self.connections.add(client)

    def client_opened(self, client: Client) -> None:
        self.clients.add(client)
        self.stats.handshakes_accepted += 1

    def client_closed(self, client: Client) -> None:
        self.clients.discard(client)

    def connection_lost(self, client: Client) -> None:
        self.clients.discard(client)
        self.connections.discard(client)
        self.guard.forget(client)
        if not self.connections:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    # -- the loop -------------------------------------------------------------

    def start(self) -> None:
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self.rounds.cancel()

    def wake(self) -> None:
        """Schedule one flush for the next reactor turn, or C{coalesce} seconds on (many wakes, one flush)."""
        if self._pending is None and self._loop.running:
            self._pending = self._clock.callLater(self.coalesce, self._flush_now)

    def _flush_now(self) -> None:
        self._pending = None
        self.flush()

    def tick(self) -> None:
        """The poll: every client whose version is behind the hub's gets caught up."""
        self.stats.ticks += 1
        self.flush()
        if self.guard.paused:
            self.guard.check_slow()  # only paused clients are looked at

    def flush(self) -> None:
        """Bring every client up to date, in slices that let the reactor accept and handshake between them.

        The first slice runs now; the rest follow on later reactor turns
        (L{hvac_push.transport.rounds}). A flush asked for while a round is
        running makes that round run again once it ends.
        """
        self.rounds.request()

    def catch_up(self, client: Client) -> None:
        """Send C{client} what changed since its version now, even if its transport is paused.

        For a client whose fragmented message just ended with alarm
        transitions waiting: the values go before the alarms they raised.
        """
        self.rounds.deliver_now(client)

    def _flush_filtered(self, clients: list[Client], version: int) -> None:
        """Clients with change-of-value filters: one selection and encode each."""
        hub = self.hub
        now = self.now()
        for client in clients:
            assert client.cov is not None
            points = client.cov.select(hub, client.last_version, client.subscription, now)
            client.last_version = version
            if points:
                payload = wire.encode_update(hub.epoch, version, points)
                client.send_bytes(payload)
                self.stats.messages_sent += 1
                self.stats.bytes_sent += len(payload)

    # -- shutdown -------------------------------------------------------------

    def close_all(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        """Send a close frame with C{code} to every open client."""
        for client in list(self.clients):
            client.send_close(code, reason)

    def when_drained(self) -> Deferred[None]:
        """A Deferred that fires once no connection is left."""
        d: Deferred[None] = Deferred()
        if not self.connections:
            d.callback(None)
        else:
            self._drained.append(d)
        return d
