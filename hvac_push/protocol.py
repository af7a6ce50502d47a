"""The Autobahn protocol: the handshake hook, client commands, and per-client delivery state.

Subclass L{PushServerProtocol} to extend the server: override
L{PushServerProtocol.acceptHandshake} for custom admission, or add names to
C{customMessageTypes} and override L{PushServerProtocol.onCustomMessage} for
messages of your own.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import tcp
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.logger import Logger

from hvac_push import wire
from hvac_push.points import EVERYTHING, Pattern, Subscription

if TYPE_CHECKING:
    from hvac_push.delivery import PushServerFactory


def query_patterns(query: str) -> tuple[Pattern, ...] | None:
    """The C{points=} filter of a raw query string, or L{None} when absent.

    The raw query is parsed here because C{parse_qs} would turn the C{+}
    wildcard into a space.
    """
    found: list[str] = []
    present = False
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if unquote(name) == "points":
            present = True
            found.extend(p for p in unquote(value).split(",") if p)
    if not present:
        return None
    return wire.parse_patterns(found)


class PushServerProtocol(WebSocketServerProtocol):
    """One WebSocket client: its subscription, the version it last got, and its pause flag."""

    _log = Logger()
    factory: "PushServerFactory"

    #: Message types a subclass handles in L{onCustomMessage}.
    customMessageTypes: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.subscription: Subscription = EVERYTHING
        #: The hub version this client's view is complete up to.
        self.last_version = 0
        #: Set by the transport (producer API) when the client stops reading.
        self.paused = False
        self.streaming = False
        self._sock: socket.socket | None = None

    # -- handshake ----------------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> str | None:
        """Admit or refuse before the upgrade; unexpected errors become HTTP 500, logged."""
        try:
            return self._admit(request)
        except ConnectionDeny as deny:
            self.factory.note_denied(deny.code)
            raise
        except Exception:
            self._log.failure("handshake from {peer} failed", peer=self.peer)
            self.factory.note_denied(ConnectionDeny.INTERNAL_SERVER_ERROR)
            raise ConnectionDeny(ConnectionDeny.INTERNAL_SERVER_ERROR, "internal server error")

    def _admit(self, request: ConnectionRequest) -> str | None:
        factory = self.factory
        if not factory.origin_allowed(request.origin):
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")
        if factory.at_capacity():
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "server is at its connection limit")
        try:
            patterns = query_patterns(self.http_request_uri.partition("?")[2])
        except wire.WireError as e:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, e.detail) from None
        if patterns is not None:
            self.subscription = Subscription.of(patterns)
        self.acceptHandshake(request)
        if wire.SUBPROTOCOL in request.protocols:
            return wire.SUBPROTOCOL
        return None

    def acceptHandshake(self, request: ConnectionRequest) -> None:
        """Hook: raise C{ConnectionDeny(status, reason)} to refuse this client.

        Called after the built-in origin, capacity and query checks. The
        default accepts everyone.
        """

    # -- life cycle ---------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        # Behind twisted.web the HTTP channel is still the transport's producer;
        # take that role so that a full send buffer pauses *this* client.
        transport: Any = self.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(self, True)
        self.factory.connection_made(self)

    def onOpen(self) -> None:
        self.streaming = True
        transport: Any = self.transport
        if (
            type(transport) is tcp.Server
            and self._perMessageCompress is None
            and not getattr(self, "logOctets", False)
            and not getattr(self, "trackTimings", False)
        ):
            self._sock = transport.socket
        hub = self.factory.hub
        self.last_version = hub.version
        self.send_bytes(wire.encode_snapshot(hub.epoch, hub.version, hub.points(self.subscription)))
        self.factory.client_opened(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.streaming = False
        self._sock = None
        self.factory.client_closed(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.streaming = False
        self._sock = None
        self.factory.connection_lost(self)
        super().connectionLost(reason)

    # -- IPushProducer: the transport tells us when the client stops reading --

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.factory.wake()

    def stopProducing(self) -> None:
        self.paused = True

    # -- client messages ----------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.send_error("binary_not_supported", "send JSON text frames")
            return
        try:
            command = wire.parse_client_message(payload, self.customMessageTypes)
            if isinstance(command, wire.Custom):
                self.onCustomMessage(command.type, command.message)
            else:
                self.handle(command)
        except wire.WireError as e:
            self.send_error(e.code, e.detail)

    def handle(self, command: wire.Command) -> None:
        if isinstance(command, wire.Subscribe):
            self.subscribe(command.patterns)
        elif isinstance(command, wire.Unsubscribe):
            self.unsubscribe(command.patterns)
        elif isinstance(command, wire.Ping):
            self.send_bytes(wire.encode_pong(command.id))

    def onCustomMessage(self, kind: str, message: dict[str, Any]) -> None:
        """Hook for the types listed in C{customMessageTypes}; raise L{wire.WireError} to reply with an error."""
        raise wire.WireError("unknown_type", f"unknown message type {kind!r}")

    def subscribe(self, patterns: tuple[Pattern, ...]) -> None:
        """Add patterns and answer with a snapshot of the points they newly match."""
        before = self.subscription
        after = Subscription.of(before.patterns | set(patterns))
        self.subscription = after
        hub = self.factory.hub
        added = [p for p in hub.points(after) if not before.matches(p.point_id)]
        self.send_bytes(wire.encode_snapshot(hub.epoch, hub.version, added))

    def unsubscribe(self, patterns: tuple[Pattern, ...]) -> None:
        """Drop patterns exactly as they were subscribed; unknown ones are an error."""
        unknown = [p.text for p in patterns if p not in self.subscription.patterns]
        if unknown:
            raise wire.WireError("not_subscribed", f"not subscribed to {', '.join(unknown)}")
        self.subscription = Subscription.of(self.subscription.patterns - set(patterns))

    # -- sending ------------------------------------------------------------

    def send_error(self, code: str, detail: str) -> None:
        self.send_bytes(wire.encode_error(code, detail))

    def send_bytes(self, payload: bytes) -> None:
        """Send one text message built by L{wire} (used for per-client replies)."""
        if self.streaming:
            self.sendMessage(payload, isBinary=False)

    def send_frame(self, frame: bytes) -> None:
        """Write an already-framed message shared by many clients.

        On plain TCP with nothing buffered the frame goes straight to the
        socket, skipping Twisted's per-connection write scheduling; anything the
        kernel does not take goes through the transport, so order is kept.
        """
        transport: Any = self.transport
        sock = self._sock
        if sock is not None and not transport.dataBuffer and not transport._tempDataLen:
            try:
                sent = sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # the transport will meet the same error and close cleanly
            if sent < len(frame):
                transport.write(frame[sent:] if sent else frame)
        elif self.streaming:
            transport.write(frame)

    def send_prepared(self, prepared: Any) -> None:
        """Send a message prepared once for many clients (see L{PushServerFactory.prepare})."""
        if not self.streaming:
            return
        if self._perMessageCompress is None:
            self.send_frame(prepared.payloadHybi)
        else:
            self.sendPreparedMessage(prepared)

