"""Per-factory bookkeeping of what clients cost: connections per IP, and readers that stopped reading."""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from hvac_push.transport.limits import TRY_AGAIN_LATER, Limits
from hvac_push.transport.stats import GuardStats


class Closable(Protocol):
    """All the guard needs of a connection: a way to close it with a code."""

    def close_with(self, code: int, reason: str) -> None: ...


class ConnectionGuard:
    """Counts connections per IP and finds clients that stayed paused too long."""

    def __init__(self, limits: Limits, clock: IReactorTime):
        self.limits = limits
        self.clock = clock
        self.stats = GuardStats()
        self.per_ip: dict[str, int] = {}
        self._counted: dict[Closable, str] = {}
        #: Clients the transport has paused, with the time they were paused.
        self.paused: dict[Closable, float] = {}

    # connections per IP

    def admit(self, protocol: Closable, host: str) -> bool:
        """Count C{protocol} against C{host}; False when C{host} is at its limit."""
        limit = self.limits.max_connections_per_ip
        count = self.per_ip.get(host, 0)
        if limit and count >= limit:
            return False
        self.per_ip[host] = count + 1
        self._counted[protocol] = host
        return True

    def forget(self, protocol: Closable) -> None:
        self.paused.pop(protocol, None)
        host = self._counted.pop(protocol, None)
        if host is not None:
            left = self.per_ip.get(host, 1) - 1
            if left > 0:
                self.per_ip[host] = left
            else:
                self.per_ip.pop(host, None)

    # slow readers

    def client_paused(self, protocol: Closable) -> None:
        if protocol not in self.paused:
            self.paused[protocol] = self.clock.seconds()

    def client_resumed(self, protocol: Closable) -> None:
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
