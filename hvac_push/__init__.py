"""hvac-push: live HVAC telemetry pushed over WebSocket, as a Twisted plugin.

What embedding applications and extensions use is exported here; the layers
behind it are described in docs/architecture.md.
"""

from hvac_push.core.points import Pattern, Point, Sample
from hvac_push.core.publisher import Producer, Publisher
from hvac_push.core.version import __version__
from hvac_push.ops.service import PushService
from hvac_push.transport.protocol import PushServerProtocol

__all__ = [
    "Pattern",
    "Point",
    "Producer",
    "Publisher",
    "PushServerProtocol",
    "PushService",
    "Sample",
    "__version__",
]
