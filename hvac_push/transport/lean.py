"""Cost per connection: drop what Autobahn keeps per client after the handshake, and skip its idle debug formatting.

At 10,000 clients every kilobyte per connection is 10 MB. Measured with
C{benchmarks/memory_per_connection.py} (tracemalloc per 1,000 connections),
the largest per-connection items that serve no purpose once a client is
open are the parsed request (headers, raw request and response text), a
private L{TrafficStats} object whose counters nobody here reads, an empty
send queue, and the instance attribute dictionary itself: Autobahn copies
the factory's ~30 options into every connection and sets ~35 flags that
stay at their initial values, which grows the dictionary past the size
where it doubles (3.3 KB instead of 0.8 KB).

What is done here, invisible to code that reads C{self.X}:

- L{LeanProtocols} builds, per factory, a subclass of its protocol class
  holding the factory's options as class attributes. Autobahn copies an
  option only when C{hasattr(self, name)} is false, so nothing is copied,
  and a connection still keeps the values of the moment it was built (a
  factory whose options change gets a new subclass for later connections).
  An option a subclass or a connection sets on itself still wins, as before.
- L{release_handshake_state} (on open) deletes instance attributes whose
  value is the very object the class holds for that name (C{None},
  C{False}, C{0}, the shared objects above...): reading them gives the same
  object from the class. Then it rebuilds the dictionary at its new,
  smaller size (a dictionary never shrinks by deletion), and that of a
  plain-TCP transport too. The empty send queue becomes L{QueueUntilUsed}.
"""

from __future__ import annotations

import operator
import pprint
from collections import deque
from typing import Any, Iterator

import autobahn.websocket.protocol as _autobahn_protocol
from autobahn.websocket.protocol import Timings, TrafficStats
from twisted.internet import tcp

#: Handshake leftovers: read by Autobahn only while processing the upgrade request.
HANDSHAKE_LEFTOVERS = ("http_request_data", "http_response_data", "http_status_line", "_wskey")

#: One sink for the counters Autobahn bumps on every frame (read only with C{trackTimings}, which is off).
SHARED_TRAFFIC_STATS = TrafficStats()

#: Shared and empty: what C{http_headers} reads as once the upgrade is done.
_NO_HEADERS: dict[str, str] = {}


def release_handshake_state(protocol: Any) -> None:
    """Called on open: forget the upgrade request's text, share the traffic counters, compact the attributes."""
    for name in HANDSHAKE_LEFTOVERS:
        if name in protocol.__dict__:
            setattr(protocol, name, None)
    if "http_headers" in protocol.__dict__:
        protocol.http_headers = _NO_HEADERS
    if not getattr(protocol, "trackTimings", False):
        protocol.trafficStats = SHARED_TRAFFIC_STATS
    if protocol.__dict__.get("_valid_events") == ["message"]:  # only read, and replaced whole by set_valid_events
        protocol._valid_events = _MESSAGE_EVENTS
    queue = protocol.__dict__.get("send_queue")
    if type(queue) is deque and not queue:
        protocol.send_queue = QueueUntilUsed(protocol)
    compact_attributes(protocol)
    transport = protocol.__dict__.get("transport")
    if type(transport) is tcp.Server:
        # Its dictionary is past the shared-keys form by now and, at the next write, would grow to 64 slots
        # (0.8 KB) for ~17 attributes; rebuilt, the attributes Twisted sets on write still fit (0.45 KB).
        # Rebuilt only: write_frame reads its dataBuffer for every frame, and an instance attribute reads faster.
        transport.__dict__ = dict(transport.__dict__)


#: What Autobahn's C{set_valid_events(["message"])} leaves on every connection, shared.
_MESSAGE_EVENTS = ("message",)

_MISSING = object()


#: Read for every client in every delivery round (the fan-out's hot path): left on the instance, where
#: Python 3.11 reads an attribute about 20 ns faster than from the class. They fit in the compacted
#: dictionary's free slots, so they cost no memory.
HOT_ATTRIBUTES = frozenset({"paused", "cov", "direct_socket", "streaming", "_perMessageCompress"})


def compact_attributes(obj: Any, keep: frozenset[str] = HOT_ATTRIBUTES) -> None:
    """Drop instance attributes identical to their class attribute (but those in C{keep}), then rebuild the dictionary at its size.

    An instance attribute that is the very object its class holds under that
    name reads the same once deleted, and is changed the same way (assigned
    anew, or mutated in place: the same object). Not so for descriptors
    (functions would read as bound methods), which are left alone.
    """
    cls = type(obj)
    state = obj.__dict__
    inherited = [
        name
        for name, value in state.items()
        if name not in keep
        and getattr(cls, name, _MISSING) is value
        and not hasattr(type(value), "__get__")
    ]
    if inherited:
        for name in inherited:
            del state[name]
        obj.__dict__ = dict(state)


class QueueUntilUsed:
    """Stands for Autobahn's per-connection C{send_queue} (an empty C{deque}, 760 bytes) until something is queued.

    Autobahn queues only chopped or synchronous sends (C{sendData}); otherwise
    it asks the queue's length on each send. Anything other than reading an
    empty queue puts a real C{deque} on the connection and goes to it.
    """

    __slots__ = ("owner",)

    def __init__(self, owner: Any):
        self.owner = owner

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def popleft(self) -> Any:
        raise IndexError("pop from an empty deque")

    def __repr__(self) -> str:
        return "deque([])"

    def __getattr__(self, name: str) -> Any:
        # append, extend, ...: only here does the connection get a queue of its own.
        real: deque[Any] = deque()
        if self.owner.__dict__.get("send_queue") is self:
            self.owner.send_queue = real
        return getattr(real, name)


#: What Autobahn sets on every connection and, on an open connection that has seen no trouble, leaves as it is.
#: Served from the class (L{LeanProtocols}), so that L{compact_attributes} can drop the instance copies.
AUTOBAHN_INITIAL_STATE: dict[str, Any] = {
    "_perMessageCompress": None,
    "trackedTimings": None,
    "send_state": _autobahn_protocol.WebSocketProtocol.SEND_STATE_GROUND,
    "data": b"",
    "triggered": False,
    "wasMaxFramePayloadSizeExceeded": False,
    "wasMaxMessagePayloadSizeExceeded": False,
    "closedByMe": False,
    "failedByMe": False,
    "droppedByMe": False,
    "wasClean": False,
    "wasNotCleanReason": None,
    "wasServerConnectionDropTimeout": False,
    "wasOpenHandshakeTimeout": False,
    "wasCloseHandshakeTimeout": False,
    "wasServingFlashSocketPolicyFile": False,
    "localCloseCode": None,
    "localCloseReason": None,
    "remoteCloseCode": None,
    "remoteCloseReason": None,
    "openHandshakeTimeoutCall": None,
    "closeHandshakeTimeoutCall": None,
    "autoPingTimeoutCall": None,
    "autoPingPending": None,
    "autoPingPendingCall": None,
    "autoPingPendingSeq": 0,
    "autoPingPendingSent": None,
    "inside_message": False,
    "current_frame": None,
    "websocket_protocol_in_use": None,
    "http_request_data": None,
    "http_response_data": None,
    "http_status_line": None,
    "_wskey": None,
}


#: What L{release_handshake_state} puts on every open connection: shared, so served from the class too.
SHARED_ON_OPEN: dict[str, Any] = {
    "trafficStats": SHARED_TRAFFIC_STATS,
    "_valid_events": _MESSAGE_EVENTS,
    "http_headers": _NO_HEADERS,
}


class LeanProtocols:
    """One factory's protocol classes: its C{protocol}, subclassed with the factory's options as class attributes.

    A factory calls L{build} from C{buildProtocol}. The subclass keeps the
    name, module and everything else of the factory's class; it is rebuilt
    when the factory's C{protocol} or any of its option values (by identity)
    changes, so each connection sees the options of the moment it was built,
    as with Autobahn's own copies.
    """

    def __init__(self) -> None:
        self._base: type | None = None
        self._values: tuple[Any, ...] = ()
        self._lean: type | None = None

    def protocol_class(self, factory: Any) -> type:
        """The class to instantiate for C{factory}'s next connection."""
        base: type = factory.protocol
        names: tuple[str, ...] = tuple(getattr(base, "CONFIG_ATTRS", ()))
        if not names:
            return base
        values = tuple(getattr(factory, name) for name in names)
        lean = self._lean
        if (
            lean is None
            or base is not self._base
            or len(values) != len(self._values)
            or not all(map(operator.is_, values, self._values))
        ):
            lean = self._lean = _subclass_with(
                base, {**dict(zip(names, values)), **AUTOBAHN_INITIAL_STATE}, SHARED_ON_OPEN
            )
            self._base, self._values = base, values
        return lean

    def build(self, factory: Any) -> Any:
        """What Twisted's C{Factory.buildProtocol} does, with the lean class."""
        protocol = self.protocol_class(factory)()
        protocol.factory = factory
        return protocol


def _subclass_with(base: type, defaults: dict[str, Any], shared: dict[str, Any]) -> type:
    """C{base} with C{defaults} as class attributes, except names C{base} (a developer's subclass) already sets.

    C{shared} are set whatever C{base} has: they only ever stand for instance attributes that held
    the very same objects (L{compact_attributes}).
    """
    attrs: dict[str, Any] = dict(shared)
    attrs |= {
        # A function option (perMessageCompressionAccept) must read as itself, not as a bound method.
        name: staticmethod(value) if hasattr(type(value), "__get__") else value
        for name, value in defaults.items()
        if not hasattr(base, name)
    }
    attrs.update(__module__=base.__module__, __qualname__=base.__qualname__, __doc__=base.__doc__)
    return type(base.__name__, (base,), attrs)


class LazyPformat:
    """C{pprint.pformat(obj)}, computed only if someone turns it into text.

    Autobahn pretty-prints every connection's ~40 options for a debug log
    line on each new connection, whether debug logging is on or not: a
    third to a half of a handshake's CPU. The log call is a no-op below
    debug level, so a value formatted on demand is never formatted.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: object):
        self.obj = obj

    def __str__(self) -> str:
        return pprint.pformat(self.obj)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _timings_text(timings: Any) -> str:
    return pprint.pformat(timings._timings)


def defer_autobahn_debug_formatting() -> None:
    """Make Autobahn's per-connection debug formatting lazy (idempotent; called when the protocol is imported)."""
    if getattr(_autobahn_protocol, "pformat", None) is pprint.pformat:
        _autobahn_protocol.pformat = LazyPformat  # type: ignore[assignment]
        # Its one use that must return text at once (trackTimings' report):
        Timings.__str__ = _timings_text  # type: ignore[method-assign]
