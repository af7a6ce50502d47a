"""Listeners that tell people where to look: the URLs of each once it listens, and a busy port in one line.

A new user starting the server needs two things from its log: where to
point a browser or a client, and, when the port is taken, which port and
what to do about it (not a 37-line traceback).
"""

from __future__ import annotations

import errno
import re
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.web.server import Site
from twisted.logger import Logger

#: The paths every hvac-push site serves, as the start-up line names them.
PATHS = (("dashboard", "/"), ("stream", "/ws"), ("health", "/healthz"), ("metrics", "/metrics"))
_WILDCARDS = {"0.0.0.0": "all IPv4 interfaces", "::": "all interfaces", "": "all interfaces"}


class ListenerService(StreamServerEndpointService):
    """A strports listener that logs its URLs when listening.

    With C{exit_on_failure} (under twistd), a port that cannot be bound is
    one error line naming it and what to do, and the process exits with
    status 1; embedded, the error is raised to the caller as usual.
    """

    _log = Logger()

    def __init__(
        self, endpoint: IStreamServerEndpoint, factory: Site, description: str, *, exit_on_failure: bool = False
    ) -> None:
        super().__init__(endpoint, factory)
        self.description = description
        self.exit_on_failure = exit_on_failure
        # As strports.service does: a port that cannot be bound fails startService, not later.
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            if not self.exit_on_failure:
                raise
            self._log.error("{message}", message=cannot_listen_line(self.description, e))
            raise SystemExit(1) from None
        if self._waitingForPort is not None:
            self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: IListeningPort | None) -> IListeningPort | None:
        if port is not None:  # None: the listen failed later, and was logged as such
            self._log.info("{message}", message=listening_line(self.description, port.getHost()))
        return port


def _scheme(description: str) -> tuple[str, str] | None:
    """(HTTP scheme, WebSocket scheme) of a strports description; L{None} for non-IP endpoints (unix:)."""
    kind = description.split(":", 1)[0].lower()
    if kind in ("ssl", "tls"):
        return "https", "wss"
    if kind in ("tcp", "tcp6", "reuseport"):
        return "http", "ws"
    return None


def listening_line(description: str, address: Any) -> str:
    """One line: where a listener is and the URLs of the dashboard, the stream, health and metrics."""
    schemes = _scheme(description)
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if schemes is None or not isinstance(host, str) or not isinstance(port, int):
        return f"Listening on {description} ({address})"
    where = _WILDCARDS.get(host)
    shown = "localhost" if where is not None or host == "127.0.0.1" else host
    if ":" in shown:
        shown = f"[{shown}]"
    base = f"{shown}:{port}"
    urls = ", ".join(
        f"{name} {(schemes[1] if name == 'stream' else schemes[0])}://{base}{path}" for name, path in PATHS
    )
    scope = f" ({where})" if where else (" (this machine only)" if host in ("127.0.0.1", "::1") else "")
    return f"Listening on {host or '*'}:{port}{scope}: {urls}"


def cannot_listen_line(description: str, error: CannotListenError) -> str:
    """One line for a listener that could not start: which port, and what to do."""
    port = error.port
    reason = error.socketError
    code = getattr(reason, "errno", None)
    if code == errno.EADDRINUSE:
        return (
            f"Cannot listen on port {port}: it is already in use (another hvac-push, or another program). "
            f"Stop that program, or choose another port: --listen {_with_port(description, port, 1)}"
        )
    if code == errno.EACCES:
        return (
            f"Cannot listen on port {port}: permission denied (ports below 1024 need privileges). "
            f"Choose a port above 1023: --listen {_with_port(description, 8080, 0)}"
        )
    return f"Cannot listen on {description}: {reason}"


def _with_port(description: str, port: object, add: int) -> str:
    """C{description} with its port number replaced by C{port + add} (8080 when there is none)."""
    new = port + add if isinstance(port, int) and 0 < port + add < 65536 else 8080
    replaced, count = re.subn(r"^(\w+):(\d+)", lambda m: f"{m.group(1)}:{new}", description)
    return replaced if count else f"tcp:{new}"
