"""One place that maps configuration onto Autobahn's C{setProtocolOptions}."""

from __future__ import annotations

import inspect
import json
from typing import Any, Mapping

from autobahn.twisted.websocket import WebSocketServerFactory

#: Our defaults. C{failByDrop=False} makes protocol errors end with an RFC close
#: code instead of a silent TCP drop; the message cap protects memory.
DEFAULT_PROTOCOL_OPTIONS: dict[str, Any] = {
    "failByDrop": False,
    "maxMessagePayloadSize": 64 * 1024,
    "maxFramePayloadSize": 64 * 1024,
    "openHandshakeTimeout": 10.0,
    "closeHandshakeTimeout": 5.0,
    "autoPingInterval": 30.0,
    "autoPingTimeout": 15.0,
    "tcpNoDelay": True,
}

#: Options that hvac-push handles itself, with the option to use instead.
_OWNED = {
    "allowedOrigins": "--allow-origin",
    "allowNullOrigin": "--allow-origin null",
    "maxConnections": "--max-connections",
}

_ACCEPTED = frozenset(
    name
    for name in inspect.signature(WebSocketServerFactory.setProtocolOptions).parameters
    if name != "self"
)


def parse_ws_option(text: str) -> tuple[str, Any]:
    """Parse C{KEY=VALUE}; the value is read as JSON when it can be (numbers, bools, lists)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--ws-option expects KEY=VALUE, got {text!r}")
    if key in _OWNED:
        raise ValueError(f"--ws-option {key} is managed by hvac-push; use {_OWNED[key]}")
    if key not in _ACCEPTED:
        raise ValueError(
            f"--ws-option {key}: not an Autobahn protocol option (known: {', '.join(sorted(_ACCEPTED - set(_OWNED)))})"
        )
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def apply_protocol_options(factory: WebSocketServerFactory, overrides: Mapping[str, Any]) -> None:
    """Set our defaults plus C{overrides} on C{factory}, raising ValueError on a bad value."""
    options = {**DEFAULT_PROTOCOL_OPTIONS, **overrides}
    # setProtocolOptions resets allowNullOrigin unless passed; origins are checked
    # in our own handshake, so Autobahn's check is left fully open.
    options["allowNullOrigin"] = True
    try:
        factory.setProtocolOptions(**options)
    except Exception as e:  # Autobahn raises bare Exception for bad values
        raise ValueError(f"bad WebSocket option: {e}") from None
