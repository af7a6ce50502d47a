"""The seams inside the transport, as small typing protocols.

The protocol (one client) and the fan-out factory (all clients) talk to each
other only through these: L{ClientHost} is what a client needs of its factory,
L{Client} what the factory and the guard need of a client. Neither module
imports the other's class for typing, so there is no import circle to hide.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from hvac_push.analytics.alarms import AlarmEngine
from hvac_push.analytics.history import History
from hvac_push.core.hub import Hub
from hvac_push.core.points import Subscription
from hvac_push.store.recorder import StoreService
from hvac_push.transport.auth import Authenticator
from hvac_push.transport.cov_filter import CovFilter
from hvac_push.transport.guard import ConnectionGuard
from hvac_push.transport.limits import Limits
from hvac_push.transport.stats import GuardStats


class Client(Protocol):
    """What the fan-out and the guard use of one connected client."""

    #: The hub version this client's view is complete up to.
    last_version: int
    subscription: Subscription
    cov: CovFilter | None
    #: Set while the fan-out must skip the client: its transport paused it (it stopped
    #: reading), or it is being sent a fragmented message.
    paused: bool

    def may_see(self, point_id: str) -> bool: ...

    def send_bytes(self, payload: bytes) -> None: ...

    def send_alarm_frame(self, seq: int, payload: bytes) -> None: ...

    def write_frame(self, frame: bytes, prepared: object) -> None: ...

    def close_with(self, code: int, reason: str) -> None: ...

    def send_close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None: ...


class ClientHost(Protocol):
    """What a client needs of the factory that made it."""

    hub: Hub
    alarms: AlarmEngine | None
    history: History | None
    store: StoreService | None
    limits: Limits
    authenticator: Authenticator | None
    guard: ConnectionGuard
    #: The reactor timers run on (Autobahn's name for it).
    reactor: IReactorTime

    @property
    def guard_stats(self) -> GuardStats: ...

    def now(self) -> float: ...

    def prepareMessage(self, payload: bytes) -> Any:
        """Frame C{payload} once for many clients (Autobahn's factory method)."""
        ...

    def wake(self) -> None: ...

    def catch_up(self, client: Client) -> None:
        """Send C{client} what changed since its version, now."""
        ...

    def origin_allowed(self, origin: str | None) -> bool: ...

    def at_capacity(self) -> bool: ...

    def note_denied(self, code: int) -> None: ...

    def connection_made(self, client: Client) -> None: ...

    def client_opened(self, client: Client) -> None: ...

    def client_closed(self, client: Client) -> None: ...

    def connection_lost(self, client: Client) -> None: ...


__all__ = ["Client", "ClientHost"]
