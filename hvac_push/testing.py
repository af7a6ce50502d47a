"""Public helpers for testing code that extends hvac-push.

Everything here talks over real sockets or real Twisted test transports: use
it to test a protocol subclass, a producer, or an embedding application.

 - L{MemoryServer}: the server on a C{MemoryReactorClock}, clients over
   C{StringTransport}; test a L{PushServerProtocol} subclass without sockets.
 - L{ScriptedProducer}: a producer that publishes given batches, optionally crashing.
 - L{PushClient} and L{connect}: an Autobahn client that queues decoded messages.
 - L{handshake_status}: the HTTP status a WebSocket upgrade gets, for refusal tests.
 - L{decode_frame}, L{encode_frame}, L{server_messages}: WebSocket frames as
   bytes, for raw-socket clients and for reading what a transport received.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Generic, Iterable, Mapping, NamedTuple, Sequence, TypedDict, TypeVar, Unpack, overload

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import protocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTCP
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from hvac_push.core.hub import Hub
from hvac_push.core.points import Sample
from hvac_push.ops.service import PushService
from hvac_push.transport.auth import Authenticator
from hvac_push.transport.fanout import PushServerFactory
from hvac_push.transport.limits import Limits
from hvac_push.transport.protocol import PushServerProtocol


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

    def send_json(self, message: object) -> None:
        self.sendMessage(json.dumps(message).encode("utf-8"))

    async def next(self, kind: str | None = None) -> dict[str, Any]:
        """The next message (of type C{kind}, skipping others when given)."""
        while True:
            message = await self.messages.get()
            if kind is None or message.get("type") == kind:
                return message


C = TypeVar("C", bound=PushClient)


@overload
def connect(
    reactor: IReactorTCP,
    port: int,
    path: str = "/ws",
    *,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    origin: str | None = None,
    client: None = None,
    protocols: Sequence[str] = (),
    tls: IOpenSSLClientConnectionCreator | None = None,
) -> Deferred[PushClient]: ...


@overload
def connect(
    reactor: IReactorTCP,
    port: int,
    path: str = "/ws",
    *,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    origin: str | None = None,
    client: type[C],
    protocols: Sequence[str] = (),
    tls: IOpenSSLClientConnectionCreator | None = None,
) -> Deferred[C]: ...


def connect(
    reactor: IReactorTCP,
    port: int,
    path: str = "/ws",
    *,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    origin: str | None = None,
    client: type[PushClient] | None = None,
    protocols: Sequence[str] = (),
    tls: IOpenSSLClientConnectionCreator | None = None,
) -> Deferred[Any]:
    """Open a real WebSocket connection; fires with the client once it is open.

    C{client} is the protocol class, L{PushClient} or a subclass of it (the
    Deferred's result is typed as that class). C{protocols} are the
    subprotocols offered. With C{tls} (a client TLS context, e.g.
    C{optionsForClientTLS(...)}) it connects with C{wss://}.
    """
    scheme = "ws" if tls is None else "wss"
    factory = WebSocketClientFactory(
        f"{scheme}://{host}:{port}{path}",
        headers=headers or {},
        origin=origin,
        protocols=list(protocols) or None,
        reactor=reactor,
    )
    factory.protocol = client or PushClient
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


# -- WebSocket frames (RFC 6455, section 5.2) -----------------------------------------------

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass(frozen=True)
class Frame:
    """One decoded WebSocket frame; C{payload} is already unmasked."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = False

    @property
    def close_code(self) -> int | None:
        """A close frame's status code, or L{None} when it carries none."""
        return close_code(self.payload)

    @property
    def close_reason(self) -> str:
        """A close frame's reason text (after the two bytes of the code)."""
        return self.payload[2:].decode("utf-8", "replace")


def close_code(payload: bytes) -> int | None:
    """The status code that starts a close frame's payload, or L{None} if it is too short to hold one."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None


def _apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte masking key (masking and unmasking are the same), one big-integer XOR, not a byte loop."""
    if not data:
        return b""
    stream = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def decode_frame(data: bytes, offset: int = 0) -> tuple[Frame, int] | None:
    """Decode the frame that starts at C{offset}; return it and the offset just after it.

    Handles 7-, 16- and 64-bit payload lengths and masked (client) as well as
    unmasked (server) frames, whatever the opcode. Returns L{None} while
    C{data} holds only part of the frame: append what arrives and call again.
    """
    if len(data) < offset + 2:
        return None
    first, second = data[offset], data[offset + 1]
    length = second & 0x7F
    position = offset + 2
    if length >= 126:
        size = 2 if length == 126 else 8
        if len(data) < position + size:
            return None
        length = int.from_bytes(data[position : position + size], "big")
        position += size
    masked = bool(second & 0x80)
    key = b""
    if masked:
        if len(data) < position + 4:
            return None
        key = data[position : position + 4]
        position += 4
    end = position + length
    if len(data) < end:
        return None
    payload = data[position:end]
    if masked:
        payload = _apply_mask(payload, key)
    frame = Frame(opcode=first & 0x0F, payload=payload, fin=bool(first & 0x80), rsv=(first >> 4) & 0x7, masked=masked)
    return frame, end


def decode_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """Every complete frame in C{data}, and the bytes left over (the start of the next frame)."""
    frames: list[Frame] = []
    offset = 0
    while (decoded := decode_frame(data, offset)) is not None:
        frame, offset = decoded
        frames.append(frame)
    return frames, data[offset:]


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    mask: bool = True,
    fin: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One frame, masked as a client must send it unless C{mask=False}.

    C{length} declares a payload length other than the real one, and C{rsv},
    C{fin} and C{mask} can break the rules too: for sending malformed frames
    on purpose.
    """
    declared = len(payload) if length is None else length
    mask_bit = 0x80 if mask else 0
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    if declared < 126:
        head += bytes([mask_bit | declared])
    elif declared < 1 << 16:
        head += bytes([mask_bit | 126]) + declared.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + declared.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _apply_mask(payload, key)


def json_object(payload: bytes) -> dict[str, Any]:
    """Parse a message that must be a JSON object, as every hvac-push server message is."""
    value = json.loads(payload)
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object: {payload[:80]!r}")
    return value


def server_frames(data: bytes) -> list[Frame]:
    """The complete frames in raw server-to-client bytes, after the HTTP response that precedes them."""
    _, sep, rest = data.partition(b"\r\n\r\n")
    return decode_frames(rest)[0] if sep else []


def text_messages(frames: Iterable[Frame]) -> list[bytes]:
    """The text messages that C{frames} carry, fragmented ones joined; other frames are skipped."""
    messages: list[bytes] = []
    parts: list[bytes] | None = None
    for frame in frames:
        if frame.opcode == TEXT:
            parts = [frame.payload]
        elif frame.opcode == CONTINUATION and parts is not None:
            parts.append(frame.payload)
        else:
            if frame.opcode == BINARY:
                parts = None  # its continuations are not text
            continue
        if frame.fin:
            messages.append(b"".join(parts))
            parts = None
    return messages


def server_messages(data: bytes) -> list[dict[str, Any]]:
    """Decode the JSON text messages in raw server-to-client bytes after the HTTP 101.

    For unit tests over C{StringTransport}: pass C{transport.value()}.
    """
    return [json_object(message) for message in text_messages(server_frames(data))]


# -- the server in memory ------------------------------------------------------------------

#: Autobahn runs its handshake, auto-ping and close timers on the global
#: reactor, not the factory's; these options turn them off, so that a test in
#: memory leaves nothing behind in the real reactor. (Our own timers, such as
#: the close grace and token expiry, run on the memory clock all the same.)
QUIET_WS_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {"openHandshakeTimeout": 0, "autoPingInterval": 0, "closeHandshakeTimeout": 0}
)


class FactoryOptions(TypedDict, total=False):
    """The keyword arguments of L{PushServerFactory} that L{MemoryServer} passes on."""

    interval: float
    allowed_origins: Iterable[str]
    max_connections: int
    ws_options: Mapping[str, Any]
    authenticator: Authenticator | None
    limits: Limits
    slice_clients: int
    coalesce: float


P = TypeVar("P", bound=PushServerProtocol)


class MemoryConnection(NamedTuple, Generic[P]):
    """One client of a L{MemoryServer}: the server's protocol instance and the transport it writes to.

    It unpacks as C{protocol, transport = server.connect()}. The transport
    keeps everything the server wrote, HTTP response first; L{messages} and
    L{frames} decode it afresh on each call (after C{transport.clear()} use
    L{decode_frames} on what follows instead).
    """

    protocol: P
    transport: StringTransport

    @property
    def status(self) -> int:
        """The HTTP status of the handshake response (101 when the client was admitted)."""
        head = self.transport.value()
        if not head.startswith(b"HTTP/"):
            raise ValueError("the transport holds no HTTP response (cleared, or no handshake)")
        return int(head.split(b" ", 2)[1])

    def frames(self) -> list[Frame]:
        """Every complete frame the server has sent this client."""
        return server_frames(self.transport.value())

    def messages(self) -> list[dict[str, Any]]:
        """Every JSON message the server has sent this client, decoded, oldest first."""
        return server_messages(self.transport.value())

    def send_json(self, message: object) -> None:
        """Send a client message: C{message} as JSON in one masked text frame."""
        self.send_frame(TEXT, json.dumps(message).encode("utf-8"))

    def send_frame(self, opcode: int, payload: bytes = b"") -> None:
        """Send one masked frame, as a browser would (text, binary, ping, close...)."""
        self.send_raw(encode_frame(opcode, payload))

    def send_raw(self, data: bytes) -> None:
        """Hand the server bytes exactly as given, as if they had arrived from the network."""
        self.protocol.dataReceived(data)

    def disconnect(self) -> None:
        """The client goes away without a closing handshake (a dropped TCP connection)."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


class MemoryServer(Generic[P]):
    """hvac-push's delivery on a C{MemoryReactorClock}: no sockets, no real time.

    For testing a L{PushServerProtocol} subclass: C{MemoryServer(MyProtocol)}
    builds a hub and a L{PushServerFactory} serving C{MyProtocol} (factory
    options as keywords), and starts its delivery loop;
    C{MemoryServer(MyProtocol, service=push)} drives a whole L{PushService}
    built on a C{MemoryReactorClock} (with C{ws_options=QUIET_WS_OPTIONS}),
    alarms and history included. Then L{connect} clients, L{publish}, and
    L{advance} the clock: an update goes out on the next reactor turn,
    C{advance(0)}. C{hub} replaces the default hub (one on the memory clock).
    """

    def __init__(
        self,
        protocol: type[P],
        *,
        hub: Hub | None = None,
        service: PushService | None = None,
        **options: Unpack[FactoryOptions],
    ):
        self.protocol_class = protocol
        self.service = service
        if service is None:
            #: The reactor the factory runs on, and the clock tests advance.
            self.clock = MemoryReactorClock()
            self.hub = hub if hub is not None else Hub(clock=self.clock.seconds)
            quiet: FactoryOptions = {**options, "ws_options": {**QUIET_WS_OPTIONS, **options.get("ws_options", {})}}
            self.factory = PushServerFactory(self.hub, self.clock, **quiet)
        else:
            if hub is not None or options:
                raise TypeError("with a service, configure the PushService itself")
            if not isinstance(service.reactor, MemoryReactorClock):
                raise TypeError("build the PushService on a MemoryReactorClock")
            self.clock = service.reactor
            self.hub = service.hub
            self.factory = service.factory
            loud = {name for name in QUIET_WS_OPTIONS if getattr(self.factory, name, 0)}
            if loud:
                raise ValueError(
                    f"{', '.join(sorted(loud))} would run on the global reactor:"
                    " build the PushService with ws_options=QUIET_WS_OPTIONS"
                )
        self.factory.protocol = protocol
        self._next_port = 40000
        if service is None:
            self.factory.start()
        else:
            service.startService()

    def connect(
        self, path: str = "/ws", headers: dict[str, str] | None = None, *, peer: str = "127.0.0.1"
    ) -> MemoryConnection[P]:
        """A new client from C{peer}, its upgrade request (C{path} with its query string, C{headers}) handled.

        Each connection gets its own source port. Check C{status} when
        admission is in question: a refused handshake leaves only the HTTP
        response in the transport.
        """
        self._next_port += 1
        address = IPv4Address("TCP", peer, self._next_port)
        # Twisted types buildProtocol's result with a C{factory} that is a
        # Twisted Factory; ours is typed by what it offers (ClientHost), so
        # mypy would find the two disjoint. Read it as an object and narrow.
        protocol: object = self.factory.buildProtocol(address)
        if not isinstance(protocol, self.protocol_class):
            raise TypeError(f"the factory built {protocol!r}, not a {self.protocol_class.__name__}")
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        protocol.dataReceived(upgrade_request(path, headers))
        return MemoryConnection(protocol, transport)

    def publish(self, *samples: Sample) -> None:
        """Publish on the reactor thread, as a producer's batch arrives; clients get it at the next C{advance}."""
        self.hub.publish_many(list(samples))

    def advance(self, seconds: float = 0.0) -> None:
        """Move the clock on, running every timer due (C{advance(0)} is the next reactor turn)."""
        self.clock.advance(seconds)
