"""A blocking, dependency-free WebSocket client for tests that drive a twistd subprocess.

Unlike L{tests.wsprobe.first_messages} it stays connected, so a test can watch
how the server closes: read frames, answer (or ignore) a close, and see the
socket end.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import struct
import time
from typing import Any

CLOSE = 0x8
TEXT = 0x1


class RawClient:
    def __init__(
        self,
        port: int,
        path: str = "/ws",
        timeout: float = 10.0,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if ssl_context is not None:
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname=host)
        self.sock.settimeout(timeout)
        self.buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n")[0].decode())

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buffer += chunk

    def frame(self) -> tuple[int, bytes]:
        """The next frame as C{(opcode, payload)} (server frames are never masked)."""
        while True:
            if len(self.buffer) >= 2:
                length = self.buffer[1] & 0x7F
                start = 2 + {126: 2, 127: 8}.get(length, 0)
                if len(self.buffer) >= start:
                    if length == 126:
                        length = int.from_bytes(self.buffer[2:4], "big")
                    elif length == 127:
                        length = int.from_bytes(self.buffer[2:10], "big")
                    if len(self.buffer) >= start + length:
                        opcode = self.buffer[0] & 0x0F
                        payload = self.buffer[start : start + length]
                        self.buffer = self.buffer[start + length :]
                        return opcode, payload
            self._fill()

    def message(self) -> dict[str, Any]:
        """The next JSON text message (control frames other than close are skipped)."""
        while True:
            opcode, payload = self.frame()
            if opcode == TEXT:
                return json.loads(payload)
            if opcode == CLOSE:
                raise ConnectionError(f"closed by the server: {close_code(payload)}")

    def wait_close(self) -> tuple[int | None, str]:
        """Skip messages until the server's close frame; return its code and reason."""
        while True:
            opcode, payload = self.frame()
            if opcode == CLOSE:
                return close_code(payload), payload[2:].decode("utf-8", "replace")

    def send_close(self, code: int = 1000) -> None:
        """Send a masked close frame (the client's half of the closing handshake)."""
        mask = os.urandom(4)
        body = struct.pack("!H", code)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(body))
        self.sock.sendall(bytes([0x80 | CLOSE, 0x80 | len(body)]) + mask + masked)

    def at_eof(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the TCP connection (within C{timeout})."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def port_is_closed(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False
