"""One MQTT broker: where it is, who we are to it, TLS, and the paho-mqtt 2.x client that talks to it.

The MQTT source (L{hvac_push.sources.mqtt}), the cluster links
(L{hvac_push.ops.cluster}) and the plant file (L{hvac_push.ops.plant_file}) all
describe a broker with L{MqttBroker} and get their client from L{make_client},
so credentials, TLS and the callback API version are set up in one place.

A password never shows: not in the repr of L{MqttBroker}, not in
L{MqttBroker.describe}, and L{redact_url} hides it in any broker URL a message
repeats. paho is imported only when a client is made.
"""

from __future__ import annotations

import ssl
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paho.mqtt.client import Client

PLAIN_PORT = 1883
TLS_PORT = 8883


def default_port(tls: bool) -> int:
    """The port a broker listens on unless told otherwise: 8883 with TLS, 1883 without."""
    return TLS_PORT if tls else PLAIN_PORT


@dataclass(frozen=True, slots=True)
class MqttTls:
    """TLS towards a broker. The broker's chain is always verified (against C{ca}, else the system's CAs)."""

    ca: str | None = None
    #: A client certificate and its key, for brokers that ask for one.
    cert: str | None = None
    key: str | None = None
    #: Skip the broker host name check (the chain is still verified).
    insecure: bool = False


@dataclass(frozen=True, slots=True, repr=False)
class MqttBroker:
    """A broker's address, the credentials to log in with, and TLS (L{None}: plain TCP)."""

    host: str
    port: int = PLAIN_PORT
    username: str | None = None
    password: str | None = None
    tls: MqttTls | None = None
    #: Further nodes of the same (clustered) broker, tried in turn after C{host:port} (L{Failover}).
    fallbacks: tuple[tuple[str, int], ...] = ()

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Every node to try, first C{host:port}, then the fallbacks, in order."""
        return ((self.host, self.port), *self.fallbacks)

    def __repr__(self) -> str:
        password = None if self.password is None else "***"
        return (
            f"MqttBroker(host={self.host!r}, port={self.port!r}, username={self.username!r}, "
            f"password={password!r}, tls={self.tls!r}, fallbacks={self.fallbacks!r})"
        )

    def describe(self) -> str:
        """C{mqtt://user@host:port} (or C{mqtts://}), without the password: for logs and health pages."""
        user = f"{self.username}@" if self.username else ""
        nodes = ",".join(_host_port(host, port) for host, port in self.addresses)
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{user}{nodes}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_addresses(text: str, default: int) -> tuple[tuple[str, int], ...]:
    """C{h1[:port],h2[:port],[::1]:port} as C{((host, port), ...)}; C{default} where a port is not given.

    Raises C{ValueError} naming the entry that is wrong (empty, bad port, repeated).
    """
    found: list[tuple[str, int]] = []
    for entry in text.split(","):
        entry = entry.strip()
        if entry.startswith("["):
            host, sep, rest = entry[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"bad address {entry!r}")
            port_text = rest[1:]
        else:
            host, _, port_text = entry.partition(":")
        if not host:
            raise ValueError(f"empty host in {text!r}")
        port = default
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"bad port in {entry!r}")
            port = int(port_text)
        if (host, port) in found:
            raise ValueError(f"{_host_port(host, port)} is listed twice")
        found.append((host, port))
    return tuple(found)


class Failover:
    """Tries the addresses of a broker in turn: each lost or failed connection moves to the next node.

    Call L{lost} from the paho callbacks C{on_connect_fail} and C{on_disconnect}
    (paho's network thread): paho then waits its reconnect delay (which doubles
    up to its maximum while attempts keep failing, and starts again from the
    minimum once one succeeds) and connects to the address set here. With one
    address it changes nothing.
    """

    def __init__(self, broker: MqttBroker):
        self.addresses = broker.addresses
        self.index = 0
        #: How many times the client moved to another node.
        self.moves = 0

    @property
    def current(self) -> tuple[str, int]:
        return self.addresses[self.index]

    def describe(self) -> str:
        return _host_port(*self.current)

    def lost(self, client: Any) -> None:
        if len(self.addresses) < 2:
            return
        self.index = (self.index + 1) % len(self.addresses)
        self.moves += 1
        # paho's public host/port setters refuse while it is reconnecting (its state is not
        # "disconnected" then); its reconnect() reads these two fields, on this same thread.
        client._host, client._port = self.current


def redact_url(text: str) -> str:
    """C{text} with the password of a C{scheme://user:password@host...} URL replaced by C{***}.

    For messages that repeat a URL someone typed. The password is taken to run to the
    last C{@}, so one containing C{/}, C{@} or C{?} is hidden whole too.
    """
    match = _USERINFO.match(text)
    if match is None:
        return text
    return f"{match.group(1)}:***@{match.group(2)}"


#: C{scheme://user:} then the password up to the last C{@}.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^:@/?#]*):.*@([^@]*)$", re.DOTALL)


def make_client(
    broker: MqttBroker,
    *,
    client_id: str = "",
    reconnect_min: float = 1.0,
    reconnect_max: float = 30.0,
    connect_timeout: float | None = None,
    max_inflight: int | None = None,
) -> Client:
    """A paho client (MQTT 3.1.1, clean session, callback API 2) set up for C{broker}; not yet connected.

    The caller sets its callbacks, then C{connect_async(broker.host, broker.port, keepalive)}
    and C{loop_start()}.
    """
    from paho.mqtt.client import Client, MQTTv311
    from paho.mqtt.enums import CallbackAPIVersion

    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTv311, clean_session=True)
    # paho annotates these as int, but uses them as seconds of any size.
    client.reconnect_delay_set(reconnect_min, reconnect_max)  # type: ignore[arg-type]
    if connect_timeout is not None:
        client.connect_timeout = connect_timeout
    if max_inflight is not None:
        client.max_inflight_messages_set(max_inflight)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    tls = broker.tls
    if tls is not None:
        client.tls_set(ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key, cert_reqs=ssl.CERT_REQUIRED)
        if tls.insecure:
            client.tls_insecure_set(True)
    return client


__all__ = ["Failover", "MqttBroker", "MqttTls", "default_port", "make_client", "parse_addresses", "redact_url"]
