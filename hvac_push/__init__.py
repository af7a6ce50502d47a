"""hvac-push: live HVAC telemetry pushed over WebSocket, as a Twisted plugin.

What embedding applications and extensions use is exported here; the layers
behind it are described in docs/architecture.md. The server's parts
(C{PushService}, C{PushServerProtocol}) are imported on first use, so that
C{hvac_push.client} and the value types load without Twisted or Autobahn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hvac_push.core.points import Pattern, Point, Sample
from hvac_push.core.publisher import Producer, Publisher
from hvac_push.core.version import __version__

if TYPE_CHECKING:
    from hvac_push.ops.service import PushService
    from hvac_push.transport.protocol import PushServerProtocol

_SERVER = {"PushService": "hvac_push.ops.service", "PushServerProtocol": "hvac_push.transport.protocol"}


def __getattr__(name: str) -> Any:
    if name in _SERVER:
        value = getattr(importlib.import_module(_SERVER[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hvac_push' has no attribute {name!r}")


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
