"""What one client may cost: the L{Limits} value, the close codes, and the per-connection message bucket.

All limits are one frozen value (defaults below), applied by the fan-out
factory, the protocol, L{hvac_push.transport.guard} and
L{hvac_push.transport.web.GuardedSite}. The hot path stays cheap: a message
costs one token-bucket check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
