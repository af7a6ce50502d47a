"""A protocol subclass: API-key admission at the handshake, and a message of its own.

Clients send their key in an ``X-Api-Key`` header. Unknown keys are refused
with HTTP 401 before the WebSocket upgrade, so they never get a byte of data.
Admitted clients may send ``{"type": "whoami"}`` and get their user name back.
"""

from __future__ import annotations

import json
from typing import Any, Callable, ClassVar

from autobahn.websocket.types import ConnectionDeny, ConnectionRequest

from hvac_push import PushServerProtocol, PushService


class ApiKeyProtocol(PushServerProtocol):
    #: Looks a key up in your own user store; returns the user name, or None.
    lookup: ClassVar[Callable[[str], str | None]] = staticmethod(lambda key: None)

    customMessageTypes = frozenset({"whoami"})

    user: str | None = None

    def acceptHandshake(self, request: ConnectionRequest) -> None:
        # Runs after the built-in origin, capacity and query checks.
        key = request.headers.get("x-api-key", "")
        user = type(self).lookup(key) if key else None
        if user is None:
            raise ConnectionDeny(401, "a valid X-Api-Key header is required")
        self.user = user

    def onCustomMessage(self, kind: str, message: dict[str, Any]) -> None:
        if kind == "whoami":
            # reply() echoes the request's "id", as every built-in answer does.
            self.reply(json.dumps({"type": "whoami", "user": self.user}).encode("utf-8"))


def require_api_keys(push: PushService, lookup: Callable[[str], str | None]) -> None:
    """Make C{push} admit only clients whose key C{lookup} knows."""
    protocol = type("ApiKeys", (ApiKeyProtocol,), {"lookup": staticmethod(lookup)})
    push.factory.protocol = protocol


if __name__ == "__main__":
    import sys

    from twisted.internet import reactor
    from twisted.python import log

    log.startLogging(sys.stdout)
    push = PushService(reactor)
    require_api_keys(push, {"k-7f3a": "ops-console"}.get)
    push.add_listener("tcp:8080:interface=127.0.0.1")
    push.startService()
    reactor.addSystemEventTrigger("before", "shutdown", push.stopService)  # 1001 to clients
    reactor.run()
