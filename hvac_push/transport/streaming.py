"""Large messages sent as fragmented WebSocket messages, written only as the client reads.

A snapshot of a 50,000-point plant is 5.4 MB. Written as one frame it sits
whole in the client's Twisted transport buffer until the client has read
it, and Twisted joins a connection's pending writes into one C{bytes}, so
250 clients opening together held 250 copies (1.3-1.6 GB). Sent instead as
one fragmented message (RFC 6455 5.4: a text frame with FIN clear,
continuation frames, the last with FIN set) of L{FRAGMENT_SIZE} pieces, a
fragment is written only while the transport is not paused, so a
connection holds about one fragment; the shared opening snapshot is framed
once (L{SharedMessage}) and each client walks the same frames by index.

While a message is in fragments no other data message may start on that
connection (control frames, Autobahn's pongs and close, may go between
fragments). So the fan-out skips the client like a paused one and catches
it up with what changed once the last fragment is out; direct replies wait
in a small bounded queue behind it (each answers a request, so none can be
dropped or merged); alarm transitions are conflated into one replay from
the alarm ring (L{FragmentWriter.hold_alarms}), so an alarm storm during a
slow snapshot costs nothing per client and never fills the queue. After the
last fragment come the replies, then (when alarms came) the client's
catch-up update and the alarm replay: values in version order, and an alarm
never before the value that raised it.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, Callable, Sequence

#: Messages above this many bytes are sent in fragments (uncompressed connections only).
STREAM_THRESHOLD = 256 * 1024
#: Payload bytes per fragment: one fits Twisted's 64 KiB transport buffer, which then pauses the producer.
FRAGMENT_SIZE = 64 * 1024
#: Replies that may wait behind a fragmented message; one more closes the client (it is not reading).
MAX_WAITING_REPLIES = 256

_TEXT = 0x1
_CONTINUATION = 0x0


def frame_header(opcode: int, fin: bool, length: int) -> bytes:
    """The unmasked header of a server frame (RFC 6455 5.2)."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def fragment_count(size: int, fragment_size: int = FRAGMENT_SIZE) -> int:
    return max(1, -(-size // fragment_size))


def fragment_frame(payload: bytes, index: int, fragment_size: int = FRAGMENT_SIZE) -> bytes:
    """Frame C{index} of C{payload} sent as one fragmented text message."""
    last = fragment_count(len(payload), fragment_size) - 1
    start = index * fragment_size
    piece = memoryview(payload)[start : start + fragment_size]
    header = frame_header(_TEXT if index == 0 else _CONTINUATION, index == last, len(piece))
    return header + piece


def fragment_frames(payload: bytes, fragment_size: int = FRAGMENT_SIZE) -> tuple[bytes, ...]:
    """Every frame of C{payload} as one fragmented text message, built at once (for sharing)."""
    count = fragment_count(len(payload), fragment_size)
    return tuple(fragment_frame(payload, i, fragment_size) for i in range(count))


class LazyFragments(Sequence[bytes]):
    """The frames of one client's own message, each built when it is written (no second copy of the payload)."""

    __slots__ = ("payload", "fragment_size", "_count")

    def __init__(self, payload: bytes, fragment_size: int = FRAGMENT_SIZE):
        self.payload = payload
        self.fragment_size = fragment_size
        self._count = fragment_count(len(payload), fragment_size)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not 0 <= index < self._count:
            raise IndexError(index)
        return fragment_frame(self.payload, index, self.fragment_size)


class SharedMessage:
    """One message for many clients: its payload, and its whole frame or fragment frames, each made once on first use."""

    __slots__ = ("payload", "_prepare", "_prepared", "_frames")

    def __init__(self, payload: bytes, prepare: Callable[[bytes], Any]):
        self.payload = payload
        self._prepare = prepare
        self._prepared: Any = None
        self._frames: tuple[bytes, ...] | None = None

    @property
    def large(self) -> bool:
        return len(self.payload) > STREAM_THRESHOLD

    def prepared(self) -> Any:
        """Autobahn's prepared message (the whole frame; compressed connections use its payload)."""
        if self._prepared is None:
            self._prepared = self._prepare(self.payload)
        return self._prepared

    def frames(self) -> tuple[bytes, ...]:
        """The fragment frames, shared by every client that streams this message."""
        if self._frames is None:
            self._frames = fragment_frames(self.payload)
        return self._frames


class FragmentWriter:
    """One fragmented message being written to one client, and what waits behind it.

    C{write_some} writes frames until the transport pauses its producer (or
    all are out); the protocol calls it again from C{resumeProducing}.
    """

    __slots__ = ("frames", "position", "waiting", "alarms_after", "_replies")

    def __init__(self, frames: Sequence[bytes]):
        self.frames = frames
        #: Index of the next frame to write.
        self.position = 0
        #: Replies (payloads), in the order they came.
        self.waiting: deque[bytes] = deque()
        #: Alarm transitions after this sequence number came meanwhile (one replay covers them all).
        self.alarms_after: int | None = None
        self._replies = 0

    def write_some(self, write: Callable[[bytes], None], paused: Callable[[], bool]) -> bool:
        """Write frames while the transport takes them; whether the last one is written."""
        frames = self.frames
        count = len(frames)
        while self.position < count:
            frame = frames[self.position]
            self.position += 1
            write(frame)
            if paused():
                break
        return self.position >= count

    def hold(self, payload: bytes) -> bool:
        """Queue a reply behind the message; False when the queue is full."""
        if self._replies >= MAX_WAITING_REPLIES:
            return False
        self._replies += 1
        self.waiting.append(payload)
        return True

    def hold_alarms(self, seq: int) -> None:
        """Alarm transition C{seq} came: replay from just before it, unless an earlier one is due."""
        if self.alarms_after is None or seq - 1 < self.alarms_after:
            self.alarms_after = seq - 1

    def take_over(self, earlier: FragmentWriter) -> None:
        """A reply that waited behind C{earlier} went in fragments itself: what still waited now waits behind it."""
        self.waiting.extend(earlier.waiting)
        self._replies += len(earlier.waiting)
        if earlier.alarms_after is not None:
            self.hold_alarms(earlier.alarms_after + 1)
