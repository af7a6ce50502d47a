"""Memory per connection: drop what Autobahn keeps per client after the handshake and never reads again.

At 10,000 clients every kilobyte per connection is 10 MB. Measured with
C{benchmarks/memory_per_connection.py} (tracemalloc per 1,000 connections),
the largest per-connection items that serve no purpose once a client is
open are the parsed request (headers, raw request and response text) and a
private L{TrafficStats} object whose counters nobody here reads.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.protocol import TrafficStats

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
