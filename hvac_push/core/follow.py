"""Following the hub: components that react to every change without a log of their own."""

from __future__ import annotations

from typing import Callable

from hvac_push.core.hub import Hub
from hvac_push.core.points import Point


class HubFollower:
    """Calls C{on_change(point)} for each point the hub changed since the last call.

    It remembers the last hub version it saw and asks the hub for what is
    newer, so a batch of changes costs one walk and nothing is missed.
    """

    def __init__(self, hub: Hub, on_change: Callable[[Point], None]):
        self.hub = hub
        self.version = hub.version
        self._on_change = on_change
        hub.add_listener(self.catch_up)

    def catch_up(self) -> None:
        changed = self.hub.changed_since(self.version)
        self.version = self.hub.version
        for point in changed:
            self._on_change(point)

    def close(self) -> None:
        self.hub.remove_listener(self.catch_up)
