"""Opening snapshots shared by clients that open within a short time of each other.

At plant scale a snapshot of everything is 50,000 points and 5 MB: encoding
and framing it for each of 250 clients that open together costs seconds of
reactor time. A snapshot taken at hub version V stays a correct opening for
a while: the client is marked as having V, and the next flush sends it what
changed since V, as for anyone else. So one encoded, framed snapshot per
subscription is reused for C{max_age} seconds, as long as the alarm sequence
it lists is still current (a client must not miss an alarm transition made
after its snapshot was built). A large one is also cut into fragment frames
once (L{SharedMessage.frames}), which every client walks by index
(L{hvac_push.transport.streaming}).

Only for the common opening: full read permission and no change-of-value
filter; anything else is built for the client alone. A resume from another
epoch gets the same snapshot marked C{resync}, kept apart and reused only
while the hub has not moved (it answers a request, so it is current): after
a server restart every client reconnects with such a resume at once, and
those whose handshakes complete in one reactor turn share it.
"""

from __future__ import annotations

from typing import Callable

from hvac_push.core.points import Subscription
from hvac_push.transport.streaming import SharedMessage

#: Seconds a shared opening snapshot is reused.
DEFAULT_MAX_AGE = 1.0
#: Subscriptions whose snapshot is kept at once (the oldest goes first).
MAX_ENTRIES = 32


class SnapshotCache:
    """Encoded opening snapshots (framed on first use) by (subscription, alarm seq), each kept C{max_age} seconds."""

    def __init__(self, now: Callable[[], float], max_age: float = DEFAULT_MAX_AGE):
        self._now = now
        self.max_age = max_age
        self._entries: dict[tuple[Subscription, int | None, bool], tuple[float, int, SharedMessage]] = {}
        self.hits = 0
        self.misses = 0

    def get(
        self, subscription: Subscription, alarm_seq: int | None, resync: bool = False, version: int | None = None
    ) -> tuple[int, SharedMessage] | None:
        """C{(hub version, message)} of a fresh shared snapshot, or L{None}.

        With C{version}, only a snapshot taken at that hub version will do (a resync answers a request).
        """
        entry = self._entries.get((subscription, alarm_seq, resync))
        if entry is None or self._now() - entry[0] > self.max_age or (version is not None and entry[1] != version):
            self.misses += 1
            return None
        self.hits += 1
        return entry[1], entry[2]

    def put(
        self, subscription: Subscription, alarm_seq: int | None, version: int, message: SharedMessage, resync: bool = False
    ) -> None:
        if self.max_age <= 0:
            return
        entries = self._entries
        now = self._now()
        for key in [k for k, e in entries.items() if now - e[0] > self.max_age]:
            del entries[key]
        if len(entries) >= MAX_ENTRIES:
            del entries[next(iter(entries))]
        entries[(subscription, alarm_seq, resync)] = (now, version, message)
