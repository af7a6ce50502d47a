"""Embedding hvac-push in an existing Twisted web application.

The application owns the ``Site``, the resource tree and the service
hierarchy; hvac-push contributes a WebSocket resource (mounted here at
``/telemetry``), its ``/metrics`` page, and a service to start and stop with
the rest. The application publishes its own points: here an operator's
setpoint, posted to ``/api/setpoint``, goes live to every connected client.
"""

from __future__ import annotations

from typing import Any

from twisted.application import strports
from twisted.application.service import Application, MultiService
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from hvac_push.core.points import Sample
from hvac_push import PushService


class Home(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Building management: live data at /telemetry\n"


class Setpoint(Resource):
    """POST /api/setpoint?zone=zone-1&value=21.5 publishes office/<zone>/setpoint."""

    isLeaf = True

    def __init__(self, push: PushService):
        super().__init__()
        self.push = push

    def render_POST(self, request: Request) -> bytes:
        zone = request.args.get(b"zone", [b"zone-1"])[0].decode()
        try:
            value = float(request.args[b"value"][0])
        except (KeyError, ValueError):
            request.setResponseCode(400)
            return b"value must be a number\n"
        # Web handlers run on the reactor thread: publish straight to the hub.
        # (From another thread, use push.publisher.publish(...) instead.)
        stored = self.push.hub.publish(Sample(f"office/{zone}/setpoint", value, "°C"))
        if stored is None:
            request.setResponseCode(400)
            return b"refused\n"
        return f"version {stored.version}\n".encode()


def build(reactor: Any, listen: str = "tcp:8080:interface=127.0.0.1") -> tuple[MultiService, PushService]:
    """The application's services: hvac-push plus our own web site on C{listen}."""
    services = MultiService()
    push = PushService(reactor)
    push.setServiceParent(services)

    root = Resource()
    root.putChild(b"", Home())
    root.putChild(b"telemetry", push.resource())
    root.putChild(b"metrics", push.metrics_resource())
    api = Resource()
    api.putChild(b"setpoint", Setpoint(push))
    root.putChild(b"api", api)
    strports.service(listen, Site(root)).setServiceParent(services)
    return services, push


def make_application(reactor: Any, listen: str) -> Application:
    """For a .tac file: C{twistd -ny building.tac}."""
    application = Application("building")
    services, _ = build(reactor, listen)
    services.setServiceParent(application)
    return application
