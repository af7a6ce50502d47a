"""A C{reuseport:} server endpoint: several processes accept on one TCP port (Linux C{SO_REUSEPORT}).

    twistd -n --pidfile= hvacpush --listen reuseport:8080:interface=127.0.0.1

Each process that listens this way gets its own accept queue; the kernel
spreads new connections across them by a hash of the addresses, so N
processes on one machine share the clients and use N cores. Every process
must run as the same user. The description takes the same keys as C{tcp:}:
C{port}, C{interface} (an IPv4 or IPv6 address; default all IPv4) and
C{backlog} (default 50).

The socket is made here (C{SO_REUSEADDR} and C{SO_REUSEPORT}, then bind and
listen) and handed to the reactor with C{adoptStreamPort}.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint, IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """Listen on C{interface:port} with C{SO_REUSEPORT} set."""

    def __init__(self, reactor: Any, port: int, interface: str = "", backlog: int = 50):
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog

    def listen(self, protocolFactory: Any) -> Deferred[IListeningPort]:
        family = socket.AF_INET6 if ":" in self.interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.interface or ("::" if family == socket.AF_INET6 else "0.0.0.0"), self.port))
            sock.listen(self.backlog)
            sock.setblocking(False)
            port = self.reactor.adoptStreamPort(sock.fileno(), family, protocolFactory)
        except Exception:
            return fail()
        finally:
            sock.close()  # the reactor holds its own duplicate of the descriptor
        return succeed(port)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ReusePortParser:
    """C{reuseport:PORT[:interface=ADDR][:backlog=N]}."""

    prefix = "reuseport"

    def parseStreamServer(self, reactor: Any, *args: object, **kwargs: object) -> ReusePortEndpoint:
        if not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("reuseport: this platform has no SO_REUSEPORT")
        if len(args) != 1 and "port" not in kwargs:
            raise ValueError("reuseport: expected reuseport:PORT[:interface=ADDR][:backlog=N]")
        unknown = set(kwargs) - {"port", "interface", "backlog"}
        if unknown:
            raise ValueError(f"reuseport: unknown key {sorted(unknown)[0]!r}")
        raw_port = str(args[0] if args else kwargs["port"])
        try:
            port = int(raw_port)
            backlog = int(str(kwargs.get("backlog", "50")))
        except ValueError:
            raise ValueError(f"reuseport: bad number in {raw_port!r} or backlog") from None
        if not 0 <= port <= 65535 or backlog < 1:
            raise ValueError(f"reuseport: port must be 0-65535 and backlog at least 1, got {port}, {backlog}")
        return ReusePortEndpoint(reactor, port, str(kwargs.get("interface", "")), backlog)


__all__ = ["ReusePortEndpoint", "ReusePortParser"]
