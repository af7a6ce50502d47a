"""What one client may cost: message size and rate, connections per IP, handshake time,
subscriptions, and how long a slow reader may stay behind.

All of it is in L{Limits} (one frozen value, defaults below), applied by the
factory, the protocol and L{GuardedSite}. The hot path stays cheap: a message
costs one token-bucket check, a pause or resume one set update, and slow
clients are found by the delivery tick looking only at the paused ones.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

if TYPE_CHECKING:
    from hvac_push.protocol import PushServerProtocol

#: RFC 6455 close codes used here (Autobahn's C{sendClose} refuses them: use C{sendCloseFrame}).
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
#: Private-use close code: the client's token expired (C{sendClose} accepts 4000-4999).
TOKEN_EXPIRED = 4001


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-client limits; 0 turns a limit off (except the message size)."""

    #: Largest message (and frame) a client may send; larger closes with 1009.
    max_message_size: int = 64 * 1024
    #: Client messages (and WebSocket pings) per second, refilled continuously...
    client_rate: float = 20.0
    #: ...into a bucket this deep. Over it: an C{error} C{rate_limited}; more than
    #: C{client_burst} refused messages (one forgiven per second) closes with 1008.
    client_burst: int = 40
    #: Open WebSocket connections from one IP address; more get HTTP 429.
    max_connections_per_ip: int = 100
    #: Seconds from TCP accept to a complete HTTP request (and Autobahn's own
    #: opening-handshake timeout); slower connections are dropped.
    handshake_timeout: float = 10.0
    #: Patterns one connection may hold; more get C{error} C{too_many_subscriptions}.
    max_subscriptions: int = 256
    #: C{SO_SNDBUF} of accepted sockets, so a slow reader is paused after
    #: kilobytes, not the megabytes Linux autotuning allows.
    send_buffer: int = 64 * 1024
    #: Seconds a client may stay paused (not reading) before it is closed with 1013.
    slow_client_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_message_size < 125:
            raise ValueError("max_message_size must be at least 125 bytes")
        for name in ("client_rate", "client_burst", "max_connections_per_ip", "handshake_timeout",
                     "max_subscriptions", "send_buffer", "slow_client_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.client_rate and self.client_burst < 1:
            raise ValueError("client_burst must be at least 1 when client_rate is set")

    def protocol_options(self) -> dict[str, Any]:
        """The Autobahn options these limits set (explicit C{ws_options} override them)."""
        return {
            "maxMessagePayloadSize": self.max_message_size,
            "maxFramePayloadSize": self.max_message_size,
            "openHandshakeTimeout": self.handshake_timeout,
        }


DEFAULT_LIMITS = Limits()


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


# -- message rate -----------------------------------------------------------

ACCEPT, LIMITED, ABUSIVE = 0, 1, 2


class MessageGate:
    """A token bucket for one connection's messages, plus a count of refusals.

    C{admit(now)} answers L{ACCEPT}, L{LIMITED} (refuse this one) or L{ABUSIVE}
    (refused more than C{burst} times, net of one forgiven per second: close).
    """

    __slots__ = ("rate", "burst", "tokens", "strikes", "stamp")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.strikes = 0.0
        self.stamp = now

    def admit(self, now: float) -> int:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.stamp = now
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
            self.strikes = max(0.0, self.strikes - elapsed)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return ACCEPT
        self.strikes += 1.0
        return ABUSIVE if self.strikes > self.burst else LIMITED


# -- sockets ------------------------------------------------------------------


def socket_of(transport: Any) -> socket.socket | None:
    """The TCP socket under C{transport} (through a TLS layer), or L{None}."""
    for _ in range(4):
        if transport is None:
            return None
        sock = getattr(transport, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
        transport = getattr(transport, "transport", None)
    return None


def bound_send_buffer(transport: Any, size: int) -> int | None:
    """Set C{SO_SNDBUF} to C{size} on the socket under C{transport}; return what the kernel granted.

    Setting it also turns off Linux's send-buffer autotuning for that socket.
    """
    if size <= 0:
        return None
    sock = socket_of(transport)
    if sock is None:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    except OSError:
        return None


# -- the handshake deadline -----------------------------------------------------


class GuardedSite(Site):
    """A C{Site} that drops connections not done sending a request C{handshake_timeout} s after accept.

    This is what bounds a client that connects and sends nothing, or trickles
    its headers (slowloris): behind twisted.web, Autobahn's own
    C{openHandshakeTimeout} only starts once the whole request has arrived.
    Later requests on a kept-alive HTTP connection fall under C{Site.timeOut}.
    """

    _log = Logger()

    def __init__(self, resource: Resource, *, clock: IReactorTime, handshake_timeout: float,
                 stats: GuardStats | None = None, **kwargs: Any):
        super().__init__(resource, **kwargs)
        self._clock = clock
        self.handshake_timeout = handshake_timeout
        self.stats = stats if stats is not None else GuardStats()
        self._deadlines: dict[object, IDelayedCall] = {}

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if protocol is not None and self.handshake_timeout > 0:
            # The request's .channel is the HTTPChannel inside Twisted's
            # HTTP/1.1-or-2 chooser; key the deadline by it.
            channel = getattr(protocol, "_channel", protocol)
            self._deadlines[channel] = self._clock.callLater(self.handshake_timeout, self._expire, channel)
        return protocol

    def getResourceFor(self, request: Request) -> Any:
        call = self._deadlines.pop(request.channel, None)
        if call is not None and call.active():
            call.cancel()
        return super().getResourceFor(request)

    def _expire(self, channel: object) -> None:
        self._deadlines.pop(channel, None)
        # After an upgrade the WebSocket resource takes the transport away from the channel.
        transport = getattr(channel, "transport", None)
        if transport is None or getattr(transport, "disconnected", False):
            return
        self.stats.handshake_timeouts += 1
        transport.abortConnection()

    def stopFactory(self) -> None:
        for call in self._deadlines.values():
            if call.active():
                call.cancel()
        self._deadlines.clear()
        super().stopFactory()


# -- per-factory bookkeeping ------------------------------------------------------


class ConnectionGuard:
    """Counts connections per IP and finds clients that stayed paused too long."""

    def __init__(self, limits: Limits, clock: IReactorTime):
        self.limits = limits
        self.clock = clock
        self.stats = GuardStats()
        self.per_ip: dict[str, int] = {}
        self._counted: dict[PushServerProtocol, str] = {}
        #: Clients the transport has paused, with the time they were paused.
        self.paused: dict[PushServerProtocol, float] = {}

    # connections per IP

    def admit(self, protocol: "PushServerProtocol", host: str) -> bool:
        """Count C{protocol} against C{host}; False when C{host} is at its limit."""
        limit = self.limits.max_connections_per_ip
        count = self.per_ip.get(host, 0)
        if limit and count >= limit:
            return False
        self.per_ip[host] = count + 1
        self._counted[protocol] = host
        return True

    def forget(self, protocol: "PushServerProtocol") -> None:
        self.paused.pop(protocol, None)
        host = self._counted.pop(protocol, None)
        if host is not None:
            left = self.per_ip.get(host, 1) - 1
            if left > 0:
                self.per_ip[host] = left
            else:
                self.per_ip.pop(host, None)

    # slow readers

    def client_paused(self, protocol: "PushServerProtocol") -> None:
        if protocol not in self.paused:
            self.paused[protocol] = self.clock.seconds()

    def client_resumed(self, protocol: "PushServerProtocol") -> None:
        self.paused.pop(protocol, None)

    def check_slow(self) -> int:
        """Close (1013) every client paused longer than the limit; return how many. Called per tick."""
        timeout = self.limits.slow_client_timeout
        if not timeout or not self.paused:
            return 0
        cutoff = self.clock.seconds() - timeout
        slow = [p for p, since in self.paused.items() if since <= cutoff]
        for protocol in slow:
            self.paused.pop(protocol, None)
            self.stats.slow_closes += 1
            protocol.close_with(
                TRY_AGAIN_LATER, f"too slow: not reading for {timeout:g} s"
            )
        return len(slow)
