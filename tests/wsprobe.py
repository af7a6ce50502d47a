"""A tiny blocking WebSocket reader for tests that talk to a twistd subprocess."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from typing import Any


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
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
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
        while len(messages) < count:
            while True:
                if len(buffer) >= 2:
                    length = buffer[1] & 0x7F
                    start = 2 + {126: 2, 127: 8}.get(length, 0)
                    if len(buffer) >= start:
                        if length == 126:
                            length = int.from_bytes(buffer[2:4], "big")
                        elif length == 127:
                            length = int.from_bytes(buffer[2:10], "big")
                        if len(buffer) >= start + length:
                            break
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                buffer += chunk
            opcode = buffer[0] & 0x0F
            payload, buffer = buffer[start : start + length], buffer[start + length :]
            if opcode == 1:
                messages.append(json.loads(payload))
        return messages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
