"""A Python client for hvac-push: a live local mirror of the points you subscribe to.

    import asyncio
    from hvac_push.client import Mirror

    async def main() -> None:
        async with Mirror("ws://localhost:8080/ws", points=["plant/#"]) as plant:
            async for change in plant.changes():
                print(change.point_id, change.value, change.status)

    asyncio.run(main())

asyncio on the C{websockets} library; no Twisted. See docs/clients.md.
"""

from hvac_push.client.errors import AuthenticationError, ClientError, ConnectionLost, HandshakeError, ServerError
from hvac_push.client.mirror import (
    Connected,
    Disconnected,
    Event,
    Mirror,
    ServerNotice,
    Stream,
    TokenSource,
    TokenVia,
)
from hvac_push.client.model import Alarm, AlarmChange, Filter, PointChange, PointState, Value, pattern_matches

__all__ = [
    "Alarm",
    "AlarmChange",
    "AuthenticationError",
    "ClientError",
    "Connected",
    "ConnectionLost",
    "Disconnected",
    "Event",
    "Filter",
    "HandshakeError",
    "Mirror",
    "PointChange",
    "PointState",
    "ServerError",
    "ServerNotice",
    "Stream",
    "TokenSource",
    "TokenVia",
    "Value",
    "pattern_matches",
]
