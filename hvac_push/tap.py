"""twistd integration: C{Options} parses and validates; C{makeService} assembles.

Every bad value is caught here and reported as a one-line usage error, so
twistd never starts half-configured or dies with a traceback.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.internet.testing import MemoryReactor
from twisted.python import usage

from hvac_push.wsoptions import parse_ws_option

DEFAULT_LISTEN = "tcp:8080"


def _number(kind: type, name: str, low: float, high: float) -> Any:
    def coerce(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise usage.UsageError(f"--{name}: expected a number, got {text!r}") from None
        if not low <= value <= high:
            raise usage.UsageError(f"--{name}: must be between {low:g} and {high:g}, got {text}")
        return value

    coerce.coerceDoc = f"Between {low:g} and {high:g}."  # type: ignore[attr-defined]
    return coerce


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Push live HVAC telemetry to WebSocket clients at /ws. With no data "
        "source configured, a built-in plant simulator feeds the server."
    )

    optParameters = [
        ["interval", None, 100.0, "Delivery poll period in milliseconds (data is also flushed as soon as it arrives).",
         _number(float, "interval", 1, 60_000)],
        ["sim-units", None, 6, "Number of simulated units (chillers, CRAC units, AHUs in turn).",
         _number(int, "sim-units", 1, 1000)],
        ["sim-rate", None, 50.0, "Simulated point updates per second, across the plant.",
         _number(float, "sim-rate", 0.01, 1_000_000)],
        ["sim-seed", None, None, "Seed for a repeatable simulation.", _number(int, "sim-seed", 0, 2**32)],
        ["max-connections", None, 10_000, "WebSocket clients beyond this are refused with HTTP 503.",
         _number(int, "max-connections", 1, 1_000_000)],
        ["drain-timeout", None, 5.0, "Seconds to wait for clients to close on shutdown.",
         _number(float, "drain-timeout", 0, 300)],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allow-origin"] = []
        self["ws-option"] = {}

    def opt_listen(self, description: str) -> None:
        """Listen on a strports endpoint, e.g. tcp:8080 or ssl:8443:privateKey=key.pem (repeatable; default tcp:8080)."""
        from twisted.internet.endpoints import serverFromString

        try:
            serverFromString(MemoryReactor(), description)
        except Exception as e:
            raise usage.UsageError(f"--listen {description!r}: {e}") from None
        self["listen"].append(description)

    def opt_allow_origin(self, origin: str) -> None:
        """Accept browsers only from this Origin, e.g. https://scada.example (repeatable; default: any)."""
        if origin != "null" and "://" not in origin:
            raise usage.UsageError(f"--allow-origin {origin!r}: expected scheme://host[:port] or null")
        self["allow-origin"].append(origin)

    def opt_ws_option(self, text: str) -> None:
        """KEY=VALUE passed to Autobahn's setProtocolOptions, e.g. autoPingInterval=10 (repeatable)."""
        try:
            key, value = parse_ws_option(text)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["ws-option"][key] = value

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        # Catch bad Autobahn option values now, not at start-up.
        from autobahn.twisted.websocket import WebSocketServerFactory

        from hvac_push.wsoptions import apply_protocol_options

        try:
            apply_protocol_options(WebSocketServerFactory(reactor=MemoryReactor()), self["ws-option"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def makeService(config: Options, reactor: Any = None) -> IService:
    """Build the L{PushService} that C{config} describes."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    from hvac_push.producers.simulator import SimulatorProducer
    from hvac_push.service import PushService

    service = PushService(
        reactor,
        interval=config["interval"] / 1000.0,
        allowed_origins=config["allow-origin"],
        max_connections=config["max-connections"],
        ws_options=config["ws-option"],
        drain_timeout=config["drain-timeout"],
    )
    service.add_producer(
        SimulatorProducer(units=config["sim-units"], rate=config["sim-rate"], seed=config["sim-seed"])
    )
    for description in config["listen"]:
        service.add_listener(description)
    return service
