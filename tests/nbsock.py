"""A non-blocking raw-socket WebSocket client for tests that run the server in the same reactor.

Every wait yields to the reactor (short sleeps) and is bounded by a deadline,
so the server keeps running while the test reads, writes or stops reading.
It can send anything: garbage, unmasked or malformed frames, partial headers.
Frames are encoded and decoded by L{hvac_push.testing}; the names tests use
(C{frame}, C{close_code} and the opcodes) are re-exported from here.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Callable

from hvac_push.testing import BINARY, CLOSE, PING, PONG, TEXT, close_code, decode_frame, json_object, upgrade_request
from hvac_push.testing import encode_frame as frame
from tests.helpers import sleep

CONTINUATION = 0x0

__all__ = ["BINARY", "CLOSE", "PING", "PONG", "TEXT", "RawSocket", "close_code", "frame"]


class RawSocket:
    """One TCP connection to the server under test, never blocking the reactor."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", bind: str | None = None, rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # Before connect, so the window is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if bind:
            self.sock.bind((bind, 0))
        self.sock.settimeout(5)
        self.sock.connect((host, port))  # loopback: the kernel completes it without the server's help
        self.sock.setblocking(False)
        self.buffer = b""
        self.eof = False
        self.received_bytes = 0
        self.response_head = ""

    def close(self) -> None:
        self.sock.close()

    # -- bytes

    async def send(self, data: bytes, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
                view = view[sent:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("send did not complete") from None
                await sleep(0.002)

    def _pull(self, limit: int = 1 << 20) -> bool:
        """Read what is there without waiting; False when nothing was."""
        try:
            chunk = self.sock.recv(min(limit, 1 << 20))
        except BlockingIOError:
            return False
        except ConnectionResetError:
            self.eof = True
            return True
        if not chunk:
            self.eof = True
            return True
        self.buffer += chunk
        self.received_bytes += len(chunk)
        return True

    async def fill(self, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.eof:
                raise ConnectionError("connection closed by the server")
            if not self._pull():
                if time.monotonic() > deadline:
                    raise TimeoutError("nothing arrived in time")
                await sleep(0.002)

    async def wait_closed(self, timeout: float = 5.0) -> float:
        """Discard input until the server ends the connection; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        while not self.eof:
            if not self._pull():
                if time.monotonic() > deadline:
                    raise TimeoutError("the server did not close the connection")
                await sleep(0.005)
            self.buffer = b""
        return time.monotonic() - started

    # -- HTTP and frames

    async def upgrade(self, path: str = "/ws", headers: dict[str, str] | None = None, timeout: float = 5.0) -> int:
        """Send an upgrade request; return the HTTP status (101 leaves the socket speaking WebSocket)."""
        await self.send(upgrade_request(path, {"Host": "127.0.0.1", **(headers or {})}))
        await self.fill(lambda: b"\r\n\r\n" in self.buffer, timeout)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.response_head = head.decode("latin-1")
        return int(head.split(b" ", 2)[1])

    def _frame_ready(self) -> bool:
        return decode_frame(self.buffer) is not None

    def _parse(self, consume: bool) -> tuple[int, bytes] | None:
        """The first complete frame as C{(opcode, payload)}, taken off the buffer with C{consume}."""
        decoded = decode_frame(self.buffer)
        if decoded is None:
            return None
        got, end = decoded
        if consume:
            self.buffer = self.buffer[end:]
        return got.opcode, got.payload

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        await self.fill(self._frame_ready, timeout)
        parsed = self._parse(consume=True)
        assert parsed is not None
        return parsed

    async def read_frame_fin(self, timeout: float = 5.0) -> tuple[int, bytes, bool]:
        """The next frame as C{(opcode, payload, fin)}: fragmented messages show as they were sent."""
        await self.fill(self._frame_ready, timeout)
        decoded = decode_frame(self.buffer)
        assert decoded is not None
        got, end = decoded
        self.buffer = self.buffer[end:]
        return got.opcode, got.payload, got.fin

    async def read_json(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next text message, its fragments joined (control frames other than close are skipped)."""
        deadline = time.monotonic() + timeout
        parts: list[bytes] | None = None
        while time.monotonic() < deadline:
            opcode, payload, fin = await self.read_frame_fin(max(0.01, deadline - time.monotonic()))
            if opcode == TEXT or (opcode == CONTINUATION and parts is not None):
                parts = [payload] if opcode == TEXT else [*(parts or []), payload]
                if fin:
                    return json_object(b"".join(parts))
            elif opcode == CLOSE:
                raise ConnectionError(f"closed with {close_code(payload)}")
        raise TimeoutError("no text message in time")

    async def read_until_close(self, timeout: float = 5.0) -> tuple[list[dict[str, Any]], int | None]:
        """Every text message up to the server's close frame, and its code."""
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            opcode, payload = await self.read_frame(max(0.01, deadline - time.monotonic()))
            if opcode == TEXT:
                messages.append(json_object(payload))
            elif opcode == CLOSE:
                return messages, close_code(payload)
        raise TimeoutError("no close frame in time")

    async def send_json(self, message: Any) -> None:
        await self.send(frame(TEXT, json.dumps(message).encode()))
