"""Socket options on accepted connections, reached through any layering of transports."""

from __future__ import annotations

import socket
from typing import Any


def socket_of(transport: Any) -> socket.socket | None:
    """The TCP socket under C{transport} (through a TLS layer), or L{None}."""
    for _ in range(4):
        if transport is None:
            return None
        sock = getattr(transport, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
        transport = getattr(transport, "transport", None)
    return None


def bound_send_buffer(transport: Any, size: int) -> int | None:
    """Set C{SO_SNDBUF} to C{size} on the socket under C{transport}; return what the kernel granted.

    Setting it also turns off Linux's send-buffer autotuning for that socket.
    """
    if size <= 0:
        return None
    sock = socket_of(transport)
    if sock is None:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    except OSError:
        return None
