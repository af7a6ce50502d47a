"""The twisted.web side: the C{/ws} resource, C{/healthz}, the dashboard's files and the
C{/client-limits.json} it reads, and the C{Site} that holds them."""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

with warnings.catch_warnings():
    # twisted.web.static builds its default error pages from deprecated classes at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web.static import File

from hvac_push.transport.fanout import PushServerFactory
from hvac_push.transport.stats import GuardStats


class PushResource(WebSocketResource):
    """The WebSocket endpoint, mountable at any path of any C{Site}."""

    def render(self, request: Request) -> Any:
        channel = request.channel
        result = super().render(request)
        # The HTTP channel no longer owns the connection: stop its idle timer,
        # which would otherwise fire hours later on a transport it no longer has.
        if channel is not None and channel.transport is None:
            channel.setTimeout(None)
        return result


def _json_response(request: Request, document: dict[str, Any]) -> bytes:
    """A small JSON document that is never cached: it describes this server as it is now."""
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document, sort_keys=True).encode("utf-8") + b"\n"


class HealthResource(Resource):
    """JSON health: 200 when ready, 503 when not, with a summary either way."""

    isLeaf = True

    def __init__(self, summary: Callable[[], dict[str, Any]]):
        super().__init__()
        self._summary = summary

    def render_GET(self, request: Request) -> bytes:
        summary = self._summary()
        request.setResponseCode(200 if summary.get("ready") else 503)
        return _json_response(request, summary)

    render_HEAD = render_GET


def client_limits(factory: PushServerFactory) -> dict[str, Any]:
    """What this server allows one client, for clients that pace themselves (the dashboard).

    Built from the factory's own L{Limits} and history, so a client never has
    to copy the server's constants. C{history_*} are L{None} when the server
    keeps no history.
    """
    limits = factory.limits
    history = factory.history
    return {
        "client_rate": limits.client_rate,
        "client_burst": limits.client_burst,
        # The cap in force: an explicit --ws-option maxMessagePayloadSize wins over the limits (0: none).
        "max_message_size": factory.maxMessagePayloadSize,
        "max_subscriptions": limits.max_subscriptions,
        "history_window": history.window if history is not None else None,
        "history_max_samples": history.max_samples if history is not None else None,
    }


class ClientLimitsResource(Resource):
    """C{/client-limits.json}: L{client_limits}, read when asked (the history is attached after the factory)."""

    isLeaf = True

    def __init__(self, factory: PushServerFactory):
        super().__init__()
        self._factory = factory

    def render_GET(self, request: Request) -> bytes:
        return _json_response(request, client_limits(self._factory))

    render_HEAD = render_GET


#: The dashboard's files, shipped inside the package (no CDN, no internet needed).
STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


class StaticFiles(File):
    """The dashboard's own files: UTF-8 types, revalidated on each load, no directory listings."""

    contentTypes = {
        **File.contentTypes,
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
    }
    indexNames: list[str] = []  # /static/ is not a second copy of the page

    def directoryListing(self) -> Resource:
        return self.childNotFound

    def render_GET(self, request: Request) -> Any:
        # Revalidate (Last-Modified) on every load, so an upgrade shows at once.
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return super().render_GET(request)

    render_HEAD = render_GET


class GuardedSite(Site):
    """A C{Site} that drops connections not done sending a request C{handshake_timeout} s after accept.

    This is what bounds a client that connects and sends nothing, or trickles
    its headers (slowloris): behind twisted.web, Autobahn's own
    C{openHandshakeTimeout} only starts once the whole request has arrived.
    Later requests on a kept-alive HTTP connection fall under C{Site.timeOut}.
    """

    _log = Logger()

    def __init__(self, resource: Resource, *, clock: IReactorTime, handshake_timeout: float,
                 stats: GuardStats | None = None, **kwargs: Any):
        super().__init__(resource, **kwargs)
        self._clock = clock
        self.handshake_timeout = handshake_timeout
        self.stats = stats if stats is not None else GuardStats()
        self._deadlines: dict[object, IDelayedCall] = {}

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if protocol is not None and self.handshake_timeout > 0:
            # The request's .channel is the HTTPChannel inside Twisted's
            # HTTP/1.1-or-2 chooser; key the deadline by it.
            channel = getattr(protocol, "_channel", protocol)
            self._deadlines[channel] = self._clock.callLater(self.handshake_timeout, self._expire, channel)
        return protocol

    def getResourceFor(self, request: Request) -> Any:
        call = self._deadlines.pop(request.channel, None)
        if call is not None and call.active():
            call.cancel()
        return super().getResourceFor(request)

    def _expire(self, channel: object) -> None:
        self._deadlines.pop(channel, None)
        # After an upgrade the WebSocket resource takes the transport away from the channel.
        transport = getattr(channel, "transport", None)
        if transport is None or getattr(transport, "disconnected", False):
            return
        self.stats.handshake_timeouts += 1
        transport.abortConnection()

    def stopFactory(self) -> None:
        for call in self._deadlines.values():
            if call.active():
                call.cancel()
        self._deadlines.clear()
        super().stopFactory()


def make_root(
    factory: PushServerFactory,
    summary: Callable[[], dict[str, Any]],
    metrics: Resource | None = None,
) -> Resource:
    """The resource tree every listener serves (C{metrics}, when given, at C{/metrics})."""
    root = Resource()
    # The live dashboard: / is its page, /static/ its scripts and style sheet.
    root.putChild(b"", StaticFiles(os.path.join(STATIC_DIR, "index.html")))
    root.putChild(b"static", StaticFiles(STATIC_DIR))
    root.putChild(b"ws", PushResource(factory))
    root.putChild(b"healthz", HealthResource(summary))
    root.putChild(b"client-limits.json", ClientLimitsResource(factory))
    if metrics is not None:
        root.putChild(b"metrics", metrics)
    return root


def make_site(root: Resource, site_factory: Callable[[Resource], Site] = Site) -> Site:
    site = site_factory(root)
    site.displayTracebacks = False
    return site
