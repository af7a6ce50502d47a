"""A blocking WebSocket client (on hvac_push.testing's frame codec) for tests that drive a twistd subprocess.

Unlike L{tests.wsprobe.first_messages} it stays connected, so a test can watch
how the server closes: read frames, answer (or ignore) a close, and see the
socket end.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from typing import Any

from hvac_push.testing import CLOSE, TEXT, Frame, decode_frame, encode_frame, json_object, upgrade_request


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
        self.sock.sendall(upgrade_request(path, {"Host": f"{host}:{port}"}))
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

    def frame(self) -> Frame:
        """The next frame, waiting for the rest of it if need be."""
        while (decoded := decode_frame(self.buffer)) is None:
            self._fill()
        frame, end = decoded
        self.buffer = self.buffer[end:]
        return frame

    def message(self) -> dict[str, Any]:
        """The next JSON text message (control frames other than close are skipped)."""
        while True:
            frame = self.frame()
            if frame.opcode == TEXT:
                return json_object(frame.payload)
            if frame.opcode == CLOSE:
                raise ConnectionError(f"closed by the server: {frame.close_code}")

    def wait_close(self) -> tuple[int | None, str]:
        """Skip messages until the server's close frame; return its code and reason."""
        while True:
            frame = self.frame()
            if frame.opcode == CLOSE:
                return frame.close_code, frame.close_reason

    def send_close(self, code: int = 1000) -> None:
        """Send a masked close frame (the client's half of the closing handshake)."""
        self.sock.sendall(encode_frame(CLOSE, struct.pack("!H", code)))

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


def port_is_closed(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False
