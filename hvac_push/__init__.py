"""hvac-push: live HVAC telemetry pushed over WebSocket, as a Twisted plugin."""

from hvac_push.points import Pattern, Point, Sample

__all__ = ["Pattern", "Point", "Sample", "__version__"]
__version__ = "0.1.0"
