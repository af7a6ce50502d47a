"""Cost per connection: drop what Autobahn keeps per client after the handshake, and skip its idle debug formatting.

At 10,000 clients every kilobyte per connection is 10 MB. Measured with
C{benchmarks/memory_per_connection.py} (tracemalloc per 1,000 connections),
the largest per-connection items that serve no purpose once a client is
open are the parsed request (headers, raw request and response text) and a
private L{TrafficStats} object whose counters nobody here reads.
"""

from __future__ import annotations

import pprint
from typing import Any

import autobahn.websocket.protocol as _autobahn_protocol
from autobahn.websocket.protocol import Timings, TrafficStats

#: Handshake leftovers: read by Autobahn only while processing the upgrade request.
HANDSHAKE_LEFTOVERS = ("http_request_data", "http_response_data", "http_status_line", "_wskey")

#: One sink for the counters Autobahn bumps on every frame (read only with C{trackTimings}, which is off).
SHARED_TRAFFIC_STATS = TrafficStats()


def release_handshake_state(protocol: Any) -> None:
    """Called on open: forget the upgrade request's text and share the traffic counters."""
    for name in HANDSHAKE_LEFTOVERS:
        if name in protocol.__dict__:
            setattr(protocol, name, None)
    if "http_headers" in protocol.__dict__:
        protocol.http_headers = _NO_HEADERS
    if not getattr(protocol, "trackTimings", False):
        protocol.trafficStats = SHARED_TRAFFIC_STATS


#: Shared and empty: what C{http_headers} reads as once the upgrade is done.
_NO_HEADERS: dict[str, str] = {}


class LazyPformat:
    """C{pprint.pformat(obj)}, computed only if someone turns it into text.

    Autobahn pretty-prints every connection's ~40 options for a debug log
    line on each new connection, whether debug logging is on or not: a
    third to a half of a handshake's CPU. The log call is a no-op below
    debug level, so a value formatted on demand is never formatted.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: object):
        self.obj = obj

    def __str__(self) -> str:
        return pprint.pformat(self.obj)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _timings_text(timings: Any) -> str:
    return pprint.pformat(timings._timings)


def defer_autobahn_debug_formatting() -> None:
    """Make Autobahn's per-connection debug formatting lazy (idempotent; called when the protocol is imported)."""
    if getattr(_autobahn_protocol, "pformat", None) is pprint.pformat:
        _autobahn_protocol.pformat = LazyPformat  # type: ignore[assignment]
        # Its one use that must return text at once (trackTimings' report):
        Timings.__str__ = _timings_text  # type: ignore[method-assign]
