"""C{--port-file PATH}: write the ports the listeners really bound, once all of them are bound.

With C{--listen tcp:0:...} the kernel picks a free port; a supervisor, a
load balancer's registration script or a test reads it from this file, so
nobody has to pick a "free" port beforehand and race others for it. The file
holds one port per line in C{--listen} order and is replaced atomically, so a
reader never sees half of it.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from zope.interface import implementer


@implementer(IStreamServerEndpoint)
class ReportingEndpoint:
    """An endpoint that tells C{report} the port it bound, then behaves as the endpoint it wraps."""

    def __init__(self, endpoint: IStreamServerEndpoint, report: Callable[[IListeningPort], None]) -> None:
        self._endpoint = endpoint
        self._report = report

    def listen(self, protocolFactory: Any) -> Deferred[IListeningPort]:
        def bound(port: IListeningPort) -> IListeningPort:
            self._report(port)
            return port

        return self._endpoint.listen(protocolFactory).addCallback(bound)


class PortFile:
    """Collects the bound ports of C{count} listeners and writes C{path} when the last one is bound."""

    def __init__(self, path: str, count: int) -> None:
        self.path = path
        self.count = count
        self.ports: list[int | None] = [None] * count
        self._next = 0

    def wrap(self, endpoint: IStreamServerEndpoint) -> IStreamServerEndpoint:
        """The endpoint of the next listener (in C{--listen} order), reporting its port here."""
        index = self._next
        self._next += 1

        def report(port: IListeningPort) -> None:
            self.ports[index] = int(getattr(port.getHost(), "port", 0))
            if all(p is not None for p in self.ports):
                self._write()

        return ReportingEndpoint(endpoint, report)

    def _write(self) -> None:
        temporary = f"{self.path}.tmp{os.getpid()}"
        with open(temporary, "w", encoding="ascii") as f:
            f.write("".join(f"{port}\n" for port in self.ports))
        os.replace(temporary, self.path)
