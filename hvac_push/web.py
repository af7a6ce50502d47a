"""The twisted.web side: the C{/ws} resource, C{/healthz}, and the C{Site} that holds them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

if TYPE_CHECKING:
    from hvac_push.delivery import PushServerFactory


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


class HealthResource(Resource):
    """JSON health: 200 when ready, 503 when not, with a summary either way."""

    isLeaf = True

    def __init__(self, summary: Callable[[], dict[str, Any]]):
        super().__init__()
        self._summary = summary

    def render_GET(self, request: Request) -> bytes:
        summary = self._summary()
        request.setResponseCode(200 if summary.get("ready") else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(summary, sort_keys=True).encode("utf-8") + b"\n"

    render_HEAD = render_GET


_INDEX = b"""<!doctype html><meta charset="utf-8"><title>hvac-push</title>
<h1>hvac-push</h1><p>Live HVAC telemetry over WebSocket at <code>/ws</code>;
health at <a href="healthz"><code>/healthz</code></a>.</p>
"""


class IndexResource(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return _INDEX


def make_root(factory: "PushServerFactory", summary: Callable[[], dict[str, Any]]) -> Resource:
    """The resource tree every listener serves."""
    root = Resource()
    root.putChild(b"", IndexResource())
    root.putChild(b"ws", PushResource(factory))
    root.putChild(b"healthz", HealthResource(summary))
    return root


def make_site(root: Resource) -> Site:
    site = Site(root)
    site.displayTracebacks = False
    return site
