"""Delivery rounds: one pass over the clients, cut into slices so the reactor breathes between them.

At 10,000 clients one fan-out is most of 100 ms of sends; run in one piece,
it keeps the reactor from accepting, handshaking and answering anyone
meanwhile. A round walks a fixed list of the clients C{slice_clients} at a
time and gives the reactor a turn (C{callLater(0)}) between slices.

Order and conflation hold because each client is brought from its own
C{last_version} to the hub's version I{at the time its slice runs}: a client
reached later in a round simply gets the newer state in the same frame. A
change that arrives mid-round makes the round run again afterwards for
those already passed. Frames are still shared: clients of one slice, or of
later slices while the hub has not moved, at the same version with the same
subscription get one encode (L{ChangeView}).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from typing import Any, Callable, Iterable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from hvac_push.core.hub import Hub
from hvac_push.core.points import Point, Subscription, unit_of
from hvac_push.transport import wire
from hvac_push.transport.interface import Client
from hvac_push.transport.stats import DeliveryStats

#: Clients per slice: about 4 ms of sends at 8 us each, short enough for accepts to keep flowing.
DEFAULT_SLICE_CLIENTS = 500


class ChangeView:
    """What changed in the hub, walked once per hub version and shared by every group.

    C{changed(since, subscription)} equals C{hub.changed_since(since,
    subscription)}; the walk back through the hub is made once for the
    oldest C{since} asked, the others take a suffix of it (found by
    bisection on versions) and filter it through the subscription's
    per-point-id match memo. So the cost per group is the changes it could
    receive, never the size of the plant.
    """

    __slots__ = ("hub", "version", "_since", "_points", "_versions", "_cache", "_by_unit")

    def __init__(self, hub: Hub):
        self.hub = hub
        self.version = -1
        self._since = 0
        self._points: list[Point] = []
        self._versions: list[int] = []
        self._cache: dict[tuple[int, Subscription], list[Point]] = {}
        #: The walked changes by C{(site, unit)}, built when a unit-scoped subscription first asks.
        self._by_unit: dict[tuple[str, str], list[Point]] | None = None

    def _reset(self) -> None:
        self.version = self.hub.version
        self._since = self.version
        self._points = []
        self._versions = []
        self._cache = {}
        self._by_unit = None

    def changed(self, since: int, subscription: Subscription) -> list[Point]:
        if self.version != self.hub.version:
            self._reset()
        key = (since, subscription)
        found = self._cache.get(key)
        if found is not None:
            return found
        if since < self._since:
            older = self.hub.changed_since(since)
            self._points = older
            self._versions = [p.version for p in older]
            self._since = since
            self._by_unit = None
        points = self._points
        start = bisect_right(self._versions, since)
        if subscription.everything:
            found = points[start:] if start else points
        elif subscription.units is not None:
            found = self._unit_changes(since, subscription)
        else:
            matches = subscription.matches
            found = [p for p in points[start:] if matches(p.point_id)]
        self._cache[key] = found
        return found


    def _unit_changes(self, since: int, subscription: Subscription) -> list[Point]:
        """Changes of a unit-scoped subscription: only its units' buckets, no per-point memo."""
        by_unit = self._by_unit
        if by_unit is None:
            by_unit = self._by_unit = {}
            for point in self._points:
                by_unit.setdefault(unit_of(point.point_id), []).append(point)
        assert subscription.units is not None
        matches = subscription.matches_uncached
        found = [
            p
            for unit in subscription.units
            for p in by_unit.get(unit, ())
            if p.version > since and matches(p.point_id)
        ]
        if len(subscription.units) > 1:
            found.sort(key=_version)
        return found


def _version(point: Point) -> int:
    return point.version


class DeliveryRounds:
    """Runs delivery rounds for one factory: at most one in progress, sliced, re-run on demand."""

    def __init__(
        self,
        hub: Hub,
        clock: IReactorTime,
        stats: DeliveryStats,
        clients: Callable[[], set[Client]],
        prepare: Callable[[bytes], Any],
        flush_filtered: Callable[[list[Client], int], None],
        slice_clients: int = DEFAULT_SLICE_CLIENTS,
    ):
        self.hub = hub
        self.clock = clock
        self.stats = stats
        self._clients = clients
        self._prepare = prepare
        self._flush_filtered = flush_filtered
        #: At most this many clients are looked at before the reactor gets a turn (0: no slicing).
        self.slice_clients = slice_clients
        self._queue: list[Client] = []
        self._position = 0
        self._again = False
        #: Whether this round has been counted in C{stats.flushes} (rounds that had someone to update).
        self._counted = False
        self._call: IDelayedCall | None = None
        self._view = ChangeView(hub)
        #: Frames encoded for (since, subscription) at the hub version of C{_frames_version}.
        self._frames: dict[tuple[int, Subscription], Any] = {}
        self._frames_version = -1

    @property
    def in_progress(self) -> bool:
        """Whether a round has slices left to run (or a re-run is scheduled)."""
        return self._call is not None

    def request(self) -> None:
        """Bring every client up to date: start a round now, or once the current one ends."""
        if self._call is not None:
            self._again = True
            return
        self._start()

    def finish(self) -> None:
        """Run what is left of the current round (and its re-run) now, in one piece (alarms need this)."""
        while self._call is not None:
            self._call.cancel()
            self._call = None
            if self._position < len(self._queue):
                self._run_slice(unbounded=True)
            else:
                self._start(unbounded=True)

    def deliver_now(self, client: Client) -> None:
        """Bring one client up to date at once, paused or not (frames shared with this version's groups)."""
        self._deliver((client,), even_paused=True)

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._queue = []
        self._position = 0
        self._again = False

    def _start(self, unbounded: bool = False) -> None:
        self._queue = list(self._clients())
        self._position = 0
        self._again = False
        self._counted = False
        self._run_slice(unbounded)

    def _next_slice(self) -> None:
        self._call = None
        if self._position < len(self._queue):
            self._run_slice()
        else:
            self._start()

    def _run_slice(self, unbounded: bool = False) -> None:
        queue = self._queue
        start = self._position
        size = self.slice_clients
        end = len(queue) if unbounded or size <= 0 else min(len(queue), start + size)
        self._position = end
        started = time.perf_counter()
        self._deliver(queue[start:end] if start or end < len(queue) else queue)
        self.stats.flush_seconds.observe(time.perf_counter() - started)
        if end < len(queue):
            self._call = self.clock.callLater(0, self._next_slice)
            return
        self._queue = []
        self._position = 0
        if self._again:
            # Someone passed earlier in this round may be behind a change made since.
            self._again = False
            self._call = self.clock.callLater(0, self._next_slice)

    def _deliver(self, batch: Iterable[Client], even_paused: bool = False) -> None:
        hub = self.hub
        version = hub.version
        stats = self.stats
        live = self._clients()
        groups: dict[tuple[int, Subscription], list[Client]] = {}
        filtered: list[Client] = []
        for client in batch:
            if client.last_version < version or (client.cov is not None and client.cov.held):
                if client not in live:
                    continue  # closed since the round began
                if client.paused and not even_paused:
                    stats.skipped_paused += 1
                    continue
                if client.cov is not None:
                    filtered.append(client)
                    continue
                key = (client.last_version, client.subscription)
                members = groups.get(key)
                if members is None:
                    groups[key] = [client]
                else:
                    members.append(client)
        if filtered:
            self._flush_filtered(filtered, version)
        if not groups:
            return
        if not self._counted:
            self._counted = True
            stats.flushes += 1
        if self._frames_version != version:
            self._frames = {}
            self._frames_version = version
        frames = self._frames
        view = self._view
        for key, members in groups.items():
            prepared = frames.get(key)
            if prepared is None:
                changed = view.changed(key[0], key[1])
                if not changed:
                    frames[key] = _NOTHING
                    for client in members:
                        client.last_version = version
                    continue
                payload = wire.encode_update(hub.epoch, version, changed)
                prepared = frames[key] = self._prepare(payload)
                stats.frames_encoded += 1
                stats.latency_seconds.observe_ages(self.clock.seconds(), changed)
            elif prepared is _NOTHING:
                for client in members:
                    client.last_version = version
                continue
            frame = prepared.payloadHybi
            stats.messages_sent += len(members)
            stats.bytes_sent += len(frame) * len(members)
            for client in members:
                client.write_frame(frame, prepared)
                client.last_version = version


#: Cached for a group that had nothing to receive at this version (no frame, only a version bump).
_NOTHING = object()
