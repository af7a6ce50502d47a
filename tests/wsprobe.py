"""A tiny blocking WebSocket reader for tests that talk to a twistd subprocess (frames: hvac_push.testing)."""

from __future__ import annotations

import os
import random
import socket
import time
from typing import Any

from hvac_push.testing import TEXT, decode_frame, json_object, upgrade_request


def first_messages(port: int, count: int = 1, path: str = "/ws", timeout: float = 10.0) -> list[dict[str, Any]]:
    """Connect to 127.0.0.1:port, upgrade, and return the first C{count} JSON messages."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with sock:
        sock.settimeout(timeout)
        sock.sendall(upgrade_request(path, {"Host": f"127.0.0.1:{port}"}))
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during handshake")
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n")[0].decode())
        messages: list[dict[str, Any]] = []
        parts: list[bytes] = []
        while len(messages) < count:
            while (decoded := decode_frame(buffer)) is None:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                buffer += chunk
            frame, end = decoded
            buffer = buffer[end:]
            if frame.opcode == TEXT:
                parts = [frame.payload]
            elif frame.opcode == 0x0 and parts:  # a continuation: large messages come in fragments
                parts.append(frame.payload)
            else:
                continue
            if frame.fin:
                messages.append(json_object(b"".join(parts)))
                parts = []
        return messages


def free_port() -> int:
    """A port that was free a moment ago (bind, close, hand on): another process may take it meanwhile.

    Prefer a listener on port 0 that reports its port (twistd C{--port-file}, read with
    L{bound_ports}), or a start that retries on a clash (tests/brokers.py, for mosquitto).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Ports below the kernel's ephemeral range are never given to outgoing connections.
_EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
_taken: set[int] = set()


def restartable_port() -> int:
    """A free port outside the kernel's ephemeral range, for a server the test kills and starts again on it.

    A port from L{free_port} lies in the ephemeral range: while its server is
    down, any outgoing connection on the machine may be given it as its local
    port, and the restarted server then cannot bind it. A port below that
    range is only ever taken by a listener that asks for it by number.
    """
    try:
        with open(_EPHEMERAL_RANGE, encoding="ascii") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = range(10000, max(10001, low))
    for _ in range(500):
        port = random.choice(candidates)
        if port in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def bound_ports(path: os.PathLike[str] | str, alive: Any = None, timeout: float = 30.0) -> list[int]:
    """The ports a twistd started with C{--listen tcp:0... --port-file PATH} bound, once it wrote them.

    C{alive} (e.g. C{lambda: process.poll() is None}) ends the wait early when the process died.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, encoding="ascii") as f:
                return [int(line) for line in f.read().split()]
        except FileNotFoundError:
            if alive is not None and not alive():
                raise RuntimeError("the server exited before it listened") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"no port file {path} within {timeout}s") from None
            time.sleep(0.02)
