"""A non-blocking raw-socket WebSocket client for tests that run the server in the same reactor.

Every wait yields to the reactor (short sleeps) and is bounded by a deadline,
so the server keeps running while the test reads, writes or stops reading.
It can send anything: garbage, unmasked or malformed frames, partial headers.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Any

from tests.helpers import sleep

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", *, mask: bool = True, fin: bool = True, rsv: int = 0,
          length: int | None = None) -> bytes:
    """One WebSocket frame as a client would send it (C{length} overrides the declared length)."""
    declared = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    if declared < 126:
        head += bytes([mask_bit | declared])
    elif declared < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", declared)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", declared)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


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

    async def fill(self, predicate: Any, timeout: float) -> None:
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
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self.fill(lambda: b"\r\n\r\n" in self.buffer, timeout)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.response_head = head.decode("latin-1")
        return int(head.split(b" ", 2)[1])

    def _frame_ready(self) -> bool:
        return self._parse(consume=False) is not None

    def _parse(self, consume: bool) -> tuple[int, bytes] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        length = buf[1] & 0x7F
        start = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, start = struct.unpack("!H", buf[2:4])[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, start = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < start + length:
            return None
        if consume:
            self.buffer = buf[start + length :]
        return buf[0] & 0x0F, buf[start : start + length]

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        await self.fill(self._frame_ready, timeout)
        parsed = self._parse(consume=True)
        assert parsed is not None
        return parsed

    async def read_json(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next text message (control frames other than close are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            opcode, payload = await self.read_frame(max(0.01, deadline - time.monotonic()))
            if opcode == TEXT:
                return json.loads(payload)
            if opcode == CLOSE:
                raise ConnectionError(f"closed with {close_code(payload)}")
        raise TimeoutError("no text message in time")

    async def read_until_close(self, timeout: float = 5.0) -> tuple[list[dict[str, Any]], int | None]:
        """Every text message up to the server's close frame, and its code."""
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            opcode, payload = await self.read_frame(max(0.01, deadline - time.monotonic()))
            if opcode == TEXT:
                messages.append(json.loads(payload))
            elif opcode == CLOSE:
                return messages, close_code(payload)
        raise TimeoutError("no close frame in time")

    async def send_json(self, message: Any) -> None:
        await self.send(frame(TEXT, json.dumps(message).encode()))
