"""Public helpers for testing code that extends hvac-push.

Everything here talks over real sockets or real Twisted test transports: use
it to test a protocol subclass, a producer, or an embedding application.

 - L{ScriptedProducer}: a producer that publishes given batches, optionally crashing.
 - L{PushClient} and L{connect}: an Autobahn client that queues decoded messages.
 - L{handshake_status}: the HTTP status a WebSocket upgrade gets, for refusal tests.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from typing import Any, Callable, Iterable, Sequence

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone

from hvac_push.core.points import Sample


class ScriptedProducer:
    """A producer that publishes C{batches} in order, C{interval} seconds apart.

    With C{crash_after=N} it raises C{RuntimeError} after its N-th batch in each
    of its first C{crashes} runs, to exercise the supervisor's restart path.
    After the script ends it keeps publishing C{heartbeat(i)} if given.
    """

    def __init__(
        self,
        batches: Iterable[Sequence[Sample]],
        *,
        interval: float = 0.01,
        crash_after: int | None = None,
        crashes: int = 1,
        heartbeat: Callable[[int], Sequence[Sample]] | None = None,
        name: str = "scripted",
    ):
        self.name = name
        self.batches = [list(b) for b in batches]
        self.interval = interval
        self.crash_after = crash_after
        self.crashes_left = crashes
        self.heartbeat = heartbeat
        self.runs = 0

    def run(self, publish: Callable[[Sequence[Sample]], None], stop: threading.Event) -> None:
        self.runs += 1
        for index, batch in enumerate(self.batches, start=1):
            if stop.is_set():
                return
            publish(batch)
            if self.crash_after is not None and index >= self.crash_after and self.crashes_left > 0:
                self.crashes_left -= 1
                raise RuntimeError(f"scripted crash in run {self.runs}")
            stop.wait(self.interval)
        beat = 0
        while not stop.wait(self.interval):
            if self.heartbeat is not None:
                publish(self.heartbeat(beat))
                beat += 1


class PushClient(WebSocketClientProtocol):
    """A WebSocket client that decodes each server message into C{messages}."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: DeferredQueue[dict[str, Any]] = DeferredQueue()
        self.opened: Deferred[PushClient] = Deferred()
        self.closed: Deferred[tuple[bool, int | None, str | None]] = Deferred()

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        if not self.closed.called:
            self.closed.callback((wasClean, code, reason))

    def send_json(self, message: Any) -> None:
        self.sendMessage(json.dumps(message).encode("utf-8"))

    async def next(self, kind: str | None = None) -> dict[str, Any]:
        """The next message (of type C{kind}, skipping others when given)."""
        while True:
            message = await self.messages.get()
            if kind is None or message.get("type") == kind:
                return message


def connect(
    reactor: Any,
    port: int,
    path: str = "/ws",
    *,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    origin: str | None = None,
    client: type[PushClient] = PushClient,
    protocols: Sequence[str] = (),
    tls: Any = None,
) -> Deferred[PushClient]:
    """Open a real WebSocket connection; fires with the client once it is open.

    C{protocols} are the subprotocols offered. With C{tls} (a client TLS
    context, e.g. C{optionsForClientTLS(...)}) it connects with C{wss://}.
    """
    scheme = "ws" if tls is None else "wss"
    factory = WebSocketClientFactory(
        f"{scheme}://{host}:{port}{path}",
        headers=headers or {},
        origin=origin,
        protocols=list(protocols) or None,
        reactor=reactor,
    )
    factory.protocol = client
    endpoint: Any = TCP4ClientEndpoint(reactor, host, port, timeout=5)
    if tls is not None:
        from twisted.internet.endpoints import wrapClientTLS

        endpoint = wrapClientTLS(tls, endpoint)
    d: Deferred[Any] = endpoint.connect(factory)
    return d.addCallback(lambda proto: proto.opened)


class _StatusReader(protocol.Protocol):
    def __init__(self, request: bytes, result: Deferred[int]):
        self.request = request
        self.result = result
        self.buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n" in self.buffer and not self.result.called:
            status_line = self.buffer.split(b"\r\n", 1)[0]
            self.result.callback(int(status_line.split()[1]))
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = ConnectionDone) -> None:
        if not self.result.called:
            self.result.errback(reason)


def handshake_status(
    reactor: Any,
    port: int,
    path: str = "/ws",
    *,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> Deferred[int]:
    """Send a WebSocket upgrade request over a real socket; fire with the HTTP status."""
    request = upgrade_request(path, {"Host": f"{host}:{port}", **(headers or {})})
    result: Deferred[int] = Deferred()
    factory = protocol.Factory.forProtocol(lambda: _StatusReader(request, result))
    TCP4ClientEndpoint(reactor, host, port, timeout=5).connect(factory).addErrback(
        lambda f: result.errback(f) if not result.called else None
    )
    return result


def server_messages(data: bytes) -> list[dict[str, Any]]:
    """Decode the JSON text messages in raw server-to-client bytes after the HTTP 101.

    For unit tests over C{StringTransport}: pass C{transport.value()}.
    """
    _, sep, frames = data.partition(b"\r\n\r\n")
    if not sep:
        return []
    messages = []
    offset = 0
    while offset + 2 <= len(frames):
        opcode = frames[offset] & 0x0F
        length = frames[offset + 1] & 0x7F
        offset += 2
        if length == 126:
            length = int.from_bytes(frames[offset : offset + 2], "big")
            offset += 2
        elif length == 127:
            length = int.from_bytes(frames[offset : offset + 8], "big")
            offset += 8
        payload = frames[offset : offset + length]
        offset += length
        if opcode == 1:
            messages.append(json.loads(payload))
    return messages


def upgrade_request(path: str = "/ws", headers: dict[str, str] | None = None) -> bytes:
    """The bytes of a WebSocket upgrade request, for feeding a protocol in unit tests."""
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {"Host": "localhost", **(headers or {})}
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {headers.pop('Host')}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
