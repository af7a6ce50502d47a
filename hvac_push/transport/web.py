"""The twisted.web side: the C{/ws} resource, C{/healthz}, the dashboard's files and the
C{/client-limits.json} it reads, and the C{Site} that holds them."""

from __future__ import annotations

import json
import os
import re
import warnings
from typing import Any, Callable

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.http import combinedLogFormatter
from twisted.web.server import Request, Site

with warnings.catch_warnings():
    # twisted.web.static builds its default error pages from deprecated classes at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web.static import File

from hvac_push.transport.api import challenge, request_permissions
from hvac_push.transport.auth import AuthError, Authenticator
from hvac_push.transport.fanout import PushServerFactory
from hvac_push.transport.plant_summary import PlantSummaryResource
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
    """JSON health: 200 when ready, 503 when not, with a summary either way.

    With C{operators} set (C{--private-status}), the summary's details go only
    to requests with a valid token; anyone else (a load balancer) gets the
    same status code and C{{"ready": ...}} alone.
    """

    isLeaf = True

    def __init__(self, summary: Callable[[], dict[str, Any]], operators: Authenticator | None = None):
        super().__init__()
        self._summary = summary
        self._operators = operators

    def render_GET(self, request: Request) -> bytes:
        summary = self._summary()
        request.setResponseCode(200 if summary.get("ready") else 503)
        if self._operators is not None and not _has_valid_token(self._operators, request):
            summary = {"ready": bool(summary.get("ready"))}
        return _json_response(request, summary)

    render_HEAD = render_GET


def client_limits(factory: PushServerFactory) -> dict[str, Any]:
    """What this server allows one client, for clients that pace themselves (the dashboard).

    Built from the factory's own L{Limits} and history, so a client never has
    to copy the server's constants. C{history_*} are L{None} when the server
    keeps no history. C{auth_required} tells the page to ask for a token before
    it connects: a browser only sees a refused handshake as a failed WebSocket.
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
        "auth_required": factory.authenticator is not None,
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


class OperatorsOnly(Resource):
    """A leaf resource (C{/metrics}) served only to requests with a valid bearer token; 401 otherwise."""

    isLeaf = True

    def __init__(self, inner: Resource, operators: Authenticator):
        super().__init__()
        self._inner = inner
        self._operators = operators

    def render(self, request: Request) -> Any:
        try:
            request_permissions(self._operators, request)
        except AuthError as e:
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", challenge(e))
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"{e.reason}\n".encode("utf-8")
        return self._inner.render(request)


def _has_valid_token(operators: Authenticator, request: Request) -> bool:
    try:
        request_permissions(operators, request)
    except AuthError:
        return False
    return True


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

    def getChild(self, path: bytes, request: Request) -> Any:
        # A NUL byte, bytes that are not UTF-8 (Twisted would log a traceback for those)
        # or a name the file system refuses: a plain 404, never a 500.
        try:
            if b"\0" in path:
                raise ValueError("NUL in path")
            path.decode("utf-8")
            return super().getChild(path, request)
        except (ValueError, OSError):
            return self.childNotFound

    def render_GET(self, request: Request) -> Any:
        # Revalidate (Last-Modified) on every load, so an upgrade shows at once.
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return super().render_GET(request)

    render_HEAD = render_GET


#: The dashboard's policy (also a <meta> tag in index.html), as a header so that
#: C{frame-ancestors} applies: no other site may frame the dashboard.
CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; "
    b"script-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # No version: it only helps an attacker pick an exploit.
    (b"server", b"hvac-push"),
)

_SECRET_PARAMETER = re.compile(rb"(^|[&;])((?:access_)?token|password|secret)=[^&;#]*", re.IGNORECASE)


def redact_uri(uri: bytes) -> bytes:
    """C{uri} with the value of every C{token=} (or password-like) query parameter replaced by C{***}."""
    path, sep, query = uri.partition(b"?")
    if not sep:
        return uri
    return path + sep + _SECRET_PARAMETER.sub(rb"\1\2=***", query)


class _RedactedRequest:
    """A request as the access log sees it: the same, except for secrets in the URI and referrer."""

    def __init__(self, request: Request):
        self._request = request
        self.uri = redact_uri(request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    def getHeader(self, name: bytes) -> bytes | None:
        value = self._request.getHeader(name)
        return redact_uri(value) if value is not None and name.lower() == b"referer" else value


def access_log_line(timestamp: str, request: Request) -> str:
    """Twisted's combined log format, with tokens never written (docs/security.md)."""
    return str(combinedLogFormatter(timestamp, _RedactedRequest(request)))


class GuardedSite(Site):
    """Our C{Site}: a handshake deadline, security headers on every answer, and an access log without tokens.

    The deadline drops connections not done sending a request
    C{handshake_timeout} s after accept. This is what bounds a client that
    connects and sends nothing, or trickles its headers (slowloris): behind
    twisted.web, Autobahn's own C{openHandshakeTimeout} only starts once the
    whole request has arrived. Later requests on a kept-alive HTTP connection
    fall under C{Site.timeOut}.
    """

    _log = Logger()

    def __init__(self, resource: Resource, *, clock: IReactorTime, handshake_timeout: float,
                 stats: GuardStats | None = None, **kwargs: Any):
        kwargs.setdefault("logFormatter", access_log_line)
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
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
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
    api: Resource | None = None,
    operators: Authenticator | None = None,
) -> Resource:
    """The resource tree every listener serves (C{metrics} and C{api}, when given, at C{/metrics} and C{/api}).

    With C{operators}, C{/metrics} and the details of C{/healthz} need a token it accepts.
    """
    root = Resource()
    # The live dashboard: / is its page, /static/ its scripts and style sheet.
    root.putChild(b"", StaticFiles(os.path.join(STATIC_DIR, "index.html")))
    root.putChild(b"static", StaticFiles(STATIC_DIR))
    root.putChild(b"ws", PushResource(factory))
    root.putChild(b"healthz", HealthResource(summary, operators))
    root.putChild(b"client-limits.json", ClientLimitsResource(factory))
    root.putChild(b"plant.json", PlantSummaryResource(factory))
    if metrics is not None:
        root.putChild(b"metrics", metrics if operators is None else OperatorsOnly(metrics, operators))
    if api is not None:
        root.putChild(b"api", api)
    return root


def make_site(root: Resource, site_factory: Callable[[Resource], Site] = Site) -> Site:
    site = site_factory(root)
    site.displayTracebacks = False
    return site
