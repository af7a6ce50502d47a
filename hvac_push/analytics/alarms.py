"""Alarms after ISA-18.2 / IEC 62682: limits, status and source alarms, acknowledgement,
shelving, out of service, flood suppression, and a replay ring.

Each alarm is identified by C{"<point id>:<kind>"}. Its process side is a
I{condition} (on after C{delay}, off after C{delay_normal}); its operator side
is whether the latest occurrence was acknowledged. Together they give the
ISA-18.2 states (docs/alarms.md has the diagram)::

    normal --condition--> active --ack--> acknowledged --clears--> normal
                            |
                            +--clears--> returned --ack--> normal   (ack_required)
                            +--clears--> latched  --ack--> normal   (latch)
                            +--clears--> normal                     (ack_required = false)

Three overlays hide an alarm from annunciation while its condition is still
followed, in this precedence: C{out_of_service} (its point was taken out of
service), C{shelved} (an operator shelved it, for a bounded time on the
engine's clock), C{suppressed} (a source alarm stands for it: flood
handling). When the last overlay goes, the alarm takes the state its
condition calls for, unacknowledged if the condition stands.

Every transition gets the next C{seq} and is kept in a bounded ring, so a
client that reconnects can replay exactly what it missed. Alarm messages are
never coalesced.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from hvac_push.core.follow import HubFollower
from hvac_push.core.hub import Hub
from hvac_push.core.points import AlarmLimits, Point, Severity, Value

#: ISA-18.2 priorities onto the severities the wire always carried (one to one).
PRIORITIES: dict[str, Severity] = {"urgent": "critical", "high": "major", "medium": "minor", "low": "warning"}
PRIORITY_OF: dict[str, str] = {severity: priority for priority, severity in PRIORITIES.items()}
#: Every state an alarm can be in; all but C{normal} are listed.
STATES = ("normal", "active", "acknowledged", "returned", "latched", "shelved", "suppressed", "out_of_service")
LISTED = STATES[1:]
#: States that hide the alarm from annunciation (precedence: first wins).
OVERLAYS = ("out_of_service", "shelved", "suppressed")
STATUS_SEVERITY: Severity = "major"
#: Point statuses that mean the source is gone; many at once make one source alarm.
SOURCE_DOWN_STATUSES = ("fault", "down")
SOURCE_KIND = "source_down"
#: The last level of a source alarm's point: a valid point id that no source publishes.
SOURCE_POINT = "_source"
OUT_OF_SERVICE_KIND = "out_of_service"
#: Kinds this engine evaluates itself (L{AlarmEngine.predict} refuses them).
ENGINE_KINDS = ("high", "low", "stale", "fault", "down", SOURCE_KIND, OUT_OF_SERVICE_KIND)
#: ISA-18.2: shelving is always time-limited.
DEFAULT_MAX_SHELVE = 8 * 3600.0
#: This many points of one source in fault at once are a flood: one source alarm.
DEFAULT_FLOOD_MIN = 3
#: Alarm rates are counted over this window (ISA-18.2 benchmarks use 10 minutes).
RATE_WINDOW = 600.0


@dataclass(frozen=True, slots=True)
class Alarm:
    id: str
    point: str
    kind: str
    state: str
    severity: str
    value: Value | None
    limit: float | None
    ts: float
    message: str
    #: Who acted (a token's subject, or C{anonymous}) and why; only on operator actions.
    by: str | None = None
    comment: str | None = None
    ack_required: bool = True
    latch: bool = False
    group: str | None = None
    notification_class: int | None = None
    #: Epoch seconds (engine clock) when a shelved alarm comes back.
    shelved_until: float | None = None
    #: A source alarm's affected points.
    points: tuple[str, ...] = ()
    #: The source alarm that stands for this one while it is C{suppressed}.
    suppressed_by: str | None = None
    #: When this alarm was raised (epoch seconds): unlike C{ts}, later transitions
    #: (acknowledged, shelved, returned) do not move it, so "since" stays true.
    since: float | None = None

    @property
    def priority(self) -> str:
        return PRIORITY_OF.get(self.severity, "medium")


AlarmListener = Callable[[int, Alarm], None]


def _raised_at(listed: Alarm | None, ts: float) -> float:
    """The C{since} of a transition: kept from the listed alarm, or C{ts} for one being raised now."""
    if listed is None:
        return ts
    return listed.since if listed.since is not None else listed.ts


class UnknownAlarm(KeyError):
    pass


class UnknownPoint(KeyError):
    pass


class NotShelvable(ValueError):
    """An operator action that does not apply to this alarm in its current state."""


@dataclass(frozen=True, slots=True)
class _Settings:
    """How one alarm behaves: what a point's limits say, or the defaults of status and predicted alarms."""

    severity: str = STATUS_SEVERITY
    ack_required: bool = True
    latch: bool = False
    group: str | None = None
    notification_class: int | None = None
    delay: float = 0.0
    delay_normal: float = 0.0


def _settings(limits: AlarmLimits | None) -> _Settings:
    if limits is None:
        return _Settings()
    return _Settings(
        limits.severity, limits.ack_required, limits.latch, limits.group,
        limits.notification_class, limits.delay, limits.delay_normal,
    )


@dataclass(slots=True)
class _Track:
    """What the engine knows of one alarm beyond its listed state."""

    id: str
    point: str
    kind: str
    settings: _Settings
    limit: float | None
    message: str
    value: Value | None
    ts: float
    condition: bool = False
    #: The latest occurrence was acknowledged (or needs none).
    acked: bool = True
    shelved_until: float | None = None
    shelve_call: IDelayedCall | None = None
    suppressed_by: str | None = None
    points: tuple[str, ...] = ()


@dataclass(slots=True)
class _Pending:
    call: IDelayedCall
    settings: _Settings
    limit: float | None
    message: str


@dataclass(slots=True)
class AlarmCounts:
    """Plain counters for C{/metrics} (L{hvac_push.ops.metrics})."""

    #: Annunciations (entries into C{active}) by priority, since start.
    annunciated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0))
    #: Per-point alarms a source alarm stood for (not annunciated).
    suppressed: int = 0
    shelved: int = 0


def unit_of(point_id: str) -> str:
    """The default source of a point: its C{site/unit}."""
    return point_id.rpartition("/")[0]


class AlarmEngine:
    """Evaluates every hub change against its point's limits and status."""

    def __init__(
        self,
        hub: Hub,
        clock: IReactorTime,
        ring_size: int = 1000,
        *,
        max_shelve: float = DEFAULT_MAX_SHELVE,
        flood_min: int = DEFAULT_FLOOD_MIN,
        source_of: Callable[[str], str] = unit_of,
    ):
        self.hub = hub
        self.clock = clock
        self.seq = 0
        #: Longest a shelve lasts, in seconds.
        self.max_shelve = max_shelve
        #: Points of one source in fault at once that make a flood (0: no flood handling).
        self.flood_min = flood_min
        #: Which source (C{site/unit} style key) a point belongs to, for flood handling.
        self.source_of = source_of
        #: Alarms that are not normal, by id.
        self.alarms: dict[str, Alarm] = {}
        #: Limits set through the API; they take precedence over configured ones.
        self.limits: dict[str, AlarmLimits] = {}
        self.ring: deque[tuple[int, Alarm]] = deque(maxlen=ring_size)
        self.counts = AlarmCounts()
        #: Points out of service: who took them out and why.
        self.out_of_service: dict[str, tuple[str | None, str | None]] = {}
        self._tracks: dict[str, _Track] = {}
        self._pending_on: dict[str, _Pending] = {}
        self._pending_off: dict[str, IDelayedCall] = {}
        self._listeners: list[AlarmListener] = []
        self._recent: deque[float] = deque()
        #: Per source: its points in fault now; and the sources whose alarm stands.
        self._down: dict[str, set[str]] = {}
        self._flooded: set[str] = set()
        self._batch: list[Point] = []
        #: Points that may have a track or a pending delay of a kind L{evaluate} decides.
        self._live: set[str] = set()
        self._settings_cache: dict[AlarmLimits | None, tuple[_Settings, _Settings]] = {}
        self._follower = HubFollower(hub, self._batch.append)
        hub.add_listener(self._batch_done)  # after the follower: the batch is collected

    # -- configuration --------------------------------------------------------

    def set_limits(self, point_id: str, limits: AlarmLimits | None) -> None:
        """Set (or with L{None} remove) a point's limits; re-evaluated at once."""
        if limits is None:
            self.limits.pop(point_id, None)
        else:
            self.limits[point_id] = limits
        point = self.hub.get(point_id)
        if point is not None:
            self.evaluate(point)

    def limits_for(self, point_id: str) -> AlarmLimits | None:
        limits = self.limits.get(point_id)
        if limits is None:
            meta = self.hub.meta.get(point_id)
            limits = meta.limits if meta is not None else None
        return limits

    def add_listener(self, listener: AlarmListener) -> None:
        self._listeners.append(listener)

    def predict(
        self,
        point_id: str,
        on: bool,
        message: str = "",
        *,
        kind: str = "predicted",
        limit: float | None = None,
        severity: str = "warning",
        ack_required: bool = True,
        group: str | None = None,
    ) -> None:
        """Set or clear a condition computed elsewhere (derived points, fault rules) on a known point.

        The alarm C{<point_id>:<kind>} then follows the usual life, with no
        delay (the caller has its own). C{kind} must not be one this engine
        evaluates itself (L{ENGINE_KINDS}).
        """
        if kind in ENGINE_KINDS:
            raise ValueError(f"alarm kind {kind!r} is evaluated by the engine itself")
        point = self.hub.get(point_id)
        if point is not None:
            settings = _Settings(severity, ack_required, group=group)
            self._condition(point, kind, on, settings, limit, message)

    # -- evaluation -----------------------------------------------------------

    def _batch_done(self) -> None:
        """One hub batch: flood starts first, then each point, then flood ends (so nothing flickers)."""
        batch = list(self._batch)
        self._batch.clear()  # the follower appends to this very list
        if not batch:
            return
        touched: set[str] = set()
        if self.flood_min:
            for point in batch:
                source = self.source_of(point.point_id)
                down = self._down.setdefault(source, set())
                if source in self._flooded:
                    touched.add(source)  # a source alarm restored without its points ends here
                if point.status in SOURCE_DOWN_STATUSES:
                    if point.point_id not in down:
                        down.add(point.point_id)
                        touched.add(source)
                elif point.point_id in down:
                    down.discard(point.point_id)
                    touched.add(source)
            for source in sorted(touched):
                if len(self._down[source]) >= self.flood_min:
                    self._flood(source, batch[-1].ts)
        for point in batch:
            self.evaluate(point)
        for source in sorted(touched):
            if source in self._flooded and len(self._down[source]) < self.flood_min:
                self._flood_over(source, batch[-1].ts)

    def evaluate(self, point: Point) -> None:
        point_id = point.point_id
        limits = self.limits_for(point_id)
        if point_id not in self._live and point.status == "ok" and not _beyond(point.value, limits):
            return  # the common case: nothing on, pending or listed, and nothing to start
        self._evaluate(point, limits)
        held = (self._tracks, self._pending_on, self._pending_off)
        if any(f"{point_id}:{kind}" in found for kind in _EVALUATED for found in held):
            self._live.add(point_id)
        else:
            self._live.discard(point_id)

    def _evaluate(self, point: Point, limits: AlarmLimits | None) -> None:
        status, settings = self._settings_of(limits)
        self._condition(point, "stale", point.status == "stale", status, None,
                        f"{point.point_id} stopped reporting")
        self._condition(point, "fault", point.status == "fault", status, None,
                        f"{point.point_id}: source fault")
        if point.status == "down" or f"{point.point_id}:down" in self._tracks:
            self._condition(point, "down", point.status == "down", status, None,
                            f"{point.point_id}: device down")
        value = point.value
        if point.status != "ok" or value is None or isinstance(value, (bool, str)):
            return  # an old, missing or non-numeric value says nothing new about limits
        if limits is None:
            for kind in ("high", "low"):
                self._condition(point, kind, False, _Settings(), None, "")
            return
        if limits.high is not None:
            on = value > (limits.high - limits.deadband if self._is_on(point.point_id, "high") else limits.high)
            self._condition(point, "high", on, settings, limits.high, f"{point.point_id} above {limits.high:g}")
        if limits.low is not None:
            on = value < (limits.low + limits.deadband if self._is_on(point.point_id, "low") else limits.low)
            self._condition(point, "low", on, settings, limits.low, f"{point.point_id} below {limits.low:g}")

    def _settings_of(self, limits: AlarmLimits | None) -> tuple[_Settings, _Settings]:
        """The settings of a point's status alarms and of its limit alarms, made once per limits."""
        found = self._settings_cache.get(limits)
        if found is None:
            if len(self._settings_cache) > 10_000:
                self._settings_cache.clear()
            limit = _settings(limits)
            # Status alarms take the point's priority and routing, never its delays or latch.
            status = _Settings(limit.severity, group=limit.group, notification_class=limit.notification_class)
            found = self._settings_cache[limits] = (status, limit)
        return found

    def _is_on(self, point_id: str, kind: str) -> bool:
        track = self._tracks.get(f"{point_id}:{kind}")
        return track is not None and track.condition

    def _condition(
        self, point: Point, kind: str, on: bool, settings: _Settings, limit: float | None, message: str
    ) -> None:
        """The raw condition now; the on- and off-delays decide when the alarm's condition follows."""
        alarm_id = f"{point.point_id}:{kind}"
        track = self._tracks.get(alarm_id)
        current = track is not None and track.condition
        if on:
            _cancel(self._pending_off.pop(alarm_id, None))
            if current or alarm_id in self._pending_on:
                return
            if settings.delay > 0:
                call = self.clock.callLater(settings.delay, self._delay_over, alarm_id, True)
                self._pending_on[alarm_id] = _Pending(call, settings, limit, message)
            else:
                self._set_condition(alarm_id, point, kind, True, settings, limit, message)
            return
        pending = self._pending_on.pop(alarm_id, None)
        if pending is not None:
            _cancel(pending.call)
        if not current or alarm_id in self._pending_off:
            return
        assert track is not None
        if settings.delay_normal > 0:
            self._pending_off[alarm_id] = self.clock.callLater(settings.delay_normal, self._delay_over, alarm_id, False)
        else:
            self._set_condition(alarm_id, point, kind, False, settings, track.limit, track.message)

    def _delay_over(self, alarm_id: str, on: bool) -> None:
        """The raw condition held for the whole delay: the alarm follows, with the newest value."""
        point_id, _, kind = alarm_id.rpartition(":")
        point = self.hub.get(point_id)
        if on:
            pending = self._pending_on.pop(alarm_id)
            if point is not None:
                self._set_condition(alarm_id, point, kind, True, pending.settings, pending.limit, pending.message)
            return
        self._pending_off.pop(alarm_id, None)
        track = self._tracks.get(alarm_id)
        if point is not None and track is not None:
            self._set_condition(alarm_id, point, kind, False, track.settings, track.limit, track.message)

    def _set_condition(
        self, alarm_id: str, point: Point, kind: str, on: bool, settings: _Settings, limit: float | None, message: str
    ) -> None:
        track = self._tracks.get(alarm_id)
        if track is None:
            if not on:
                return
            track = self._tracks[alarm_id] = _Track(alarm_id, point.point_id, kind, settings, limit, message,
                                                     point.value, point.ts)
        track.settings, track.limit, track.message = settings, limit, message
        track.value, track.ts = point.value, point.ts
        track.condition = on
        if on:
            track.acked = False  # a new occurrence is acknowledged anew
            if kind in SOURCE_DOWN_STATUSES:
                source = self.source_of(point.point_id)
                if source in self._flooded:
                    track.suppressed_by = _source_id(source)
                    if alarm_id not in self.alarms:
                        self.counts.suppressed += 1
        self._refresh(track)

    # -- flood handling -------------------------------------------------------

    def _flood(self, source: str, ts: float) -> None:
        """Raise (or update) the source alarm; per-point status alarms of the source are suppressed."""
        alarm_id = _source_id(source)
        points = tuple(sorted(self._down[source]))
        severities = [self._severity_of(p) for p in points]
        severity = min(severities, key=_rank) if severities else STATUS_SEVERITY
        message = f"{source}: {len(points)} points lost their source"
        track = self._tracks.get(alarm_id)
        if track is None:
            track = self._tracks[alarm_id] = _Track(alarm_id, f"{source}/{SOURCE_POINT}", SOURCE_KIND, _Settings(severity),
                                                     None, message, None, ts)
        changed = track.points != points
        track.points, track.message, track.ts = points, message, ts
        if source not in self._flooded:
            self._flooded.add(source)
            track.condition, track.acked = True, False
            for other in self._tracks.values():
                if other.kind in SOURCE_DOWN_STATUSES and self.source_of(other.point) == source:
                    other.suppressed_by = alarm_id
                    self._refresh(other)
            self._refresh(track)
        elif changed:
            self._refresh(track, force=True)

    def _flood_over(self, source: str, ts: float) -> None:
        """The source is back (or down to a few points): those still in fault annunciate on their own."""
        self._flooded.discard(source)
        alarm_id = _source_id(source)
        for other in list(self._tracks.values()):
            if other.suppressed_by == alarm_id:
                other.suppressed_by = None
                self._released(other)
        track = self._tracks.get(alarm_id)
        if track is not None:
            track.condition, track.ts = False, ts
            self._refresh(track)

    def _severity_of(self, point_id: str) -> str:
        limits = self.limits_for(point_id)
        return limits.severity if limits is not None else STATUS_SEVERITY

    # -- states and transitions -----------------------------------------------

    def _display(self, track: _Track) -> str:
        if track.kind == OUT_OF_SERVICE_KIND:
            return OUT_OF_SERVICE_KIND if track.condition else "normal"
        if track.point in self.out_of_service:
            return "out_of_service"
        if track.shelved_until is not None:
            return "shelved"
        if track.suppressed_by is not None:
            return "suppressed"
        if track.condition:
            return "acknowledged" if track.acked else "active"
        if track.acked:
            return "normal"
        if track.settings.latch:
            return "latched"
        return "returned" if track.settings.ack_required else "normal"

    def _refresh(
        self, track: _Track, *, by: str | None = None, comment: str | None = None,
        ts: float | None = None, force: bool = False,
    ) -> Alarm | None:
        """Send a transition if the listed state changed (or C{force}); forget tracks with nothing left."""
        state = self._display(track)
        listed = self.alarms.get(track.id)
        before = listed.state if listed is not None else "normal"
        if state in OVERLAYS and listed is None and track.shelved_until is None and track.kind != OUT_OF_SERVICE_KIND:
            state = "normal"  # an alarm that was never shown is not shown as hidden either
        if state == "normal" and not track.condition and track.shelved_until is None:
            self._tracks.pop(track.id, None)
        if state == before and not force:
            return listed
        if state == "normal" and listed is None:
            return None
        if state == "active" and before != "active":
            self._annunciated(track.settings.severity)
        settings = track.settings
        alarm = Alarm(
            track.id, track.point, track.kind, state, settings.severity, track.value, track.limit,
            track.ts if ts is None else ts, track.message, by, comment or None,
            settings.ack_required, settings.latch, settings.group, settings.notification_class,
            track.shelved_until if state == "shelved" else None, track.points,
            track.suppressed_by if state == "suppressed" else None,
            _raised_at(listed, track.ts),
        )
        self._transition(alarm)
        return alarm

    def _released(
        self, track: _Track, by: str | None = None, comment: str | None = None, ts: float | None = None
    ) -> Alarm | None:
        """An overlay went: with none left, the alarm takes the state its condition calls for."""
        if track.shelved_until is None and track.suppressed_by is None and track.point not in self.out_of_service:
            track.acked = not track.condition
        return self._refresh(track, by=by, comment=comment, ts=ts)

    def _annunciated(self, severity: str) -> None:
        priority = PRIORITY_OF.get(severity, "medium")
        self.counts.annunciated[priority] = self.counts.annunciated.get(priority, 0) + 1
        self._recent.append(self.clock.seconds())
        self.rate()  # prunes, so the window stays bounded without scrapes

    def _transition(self, alarm: Alarm) -> None:
        self.seq += 1
        if alarm.state == "normal":
            self.alarms.pop(alarm.id, None)
        else:
            self.alarms[alarm.id] = alarm
        self.ring.append((self.seq, alarm))
        for listener in list(self._listeners):
            listener(self.seq, alarm)

    # -- operators ------------------------------------------------------------

    def _listed_track(self, alarm_id: str) -> _Track:
        track = self._tracks.get(alarm_id)
        if track is None or alarm_id not in self.alarms:
            raise UnknownAlarm(alarm_id)
        return track

    def ack(self, alarm_id: str, by: str | None = None, comment: str | None = None) -> Alarm:
        """Acknowledge: active becomes acknowledged; returned and latched become normal.

        C{by} and C{comment} travel with the transition, for the journal. An
        alarm under an overlay (shelved, ...) stays as it is.
        """
        track = self._listed_track(alarm_id)
        current = self.alarms[alarm_id]
        if current.state == "acknowledged" or track.kind == OUT_OF_SERVICE_KIND:
            return current
        track.acked = True
        return self._refresh(track, by=by, comment=comment, ts=self.clock.seconds()) or current

    def shelve(self, alarm_id: str, minutes: float, by: str | None = None, comment: str | None = None) -> Alarm:
        """Hide a listed alarm from annunciation for C{minutes} (at most L{max_shelve}); shelving again renews."""
        track = self._listed_track(alarm_id)
        if track.kind == OUT_OF_SERVICE_KIND:
            raise NotShelvable(f"{alarm_id} marks a point out of service; put the point back in service instead")
        if not minutes > 0:
            raise NotShelvable("minutes must be more than 0")
        seconds = min(minutes * 60.0, self.max_shelve)
        now = self.clock.seconds()
        _cancel(track.shelve_call)
        track.shelved_until = now + seconds
        track.shelve_call = self.clock.callLater(seconds, self._shelve_over, alarm_id)
        self.counts.shelved += 1
        alarm = self._refresh(track, by=by, comment=comment, ts=now, force=True)
        assert alarm is not None
        return alarm

    def unshelve(self, alarm_id: str, by: str | None = None, comment: str | None = None) -> Alarm | None:
        """End a shelve now; the alarm takes the state its condition calls for (the transition is returned)."""
        track = self._listed_track(alarm_id)
        if track.shelved_until is None:
            raise NotShelvable(f"{alarm_id} is not shelved")
        _cancel(track.shelve_call)
        track.shelve_call = track.shelved_until = None
        return self._released(track, by=by, comment=comment, ts=self.clock.seconds())

    def _shelve_over(self, alarm_id: str) -> None:
        track = self._tracks.get(alarm_id)
        if track is not None and track.shelved_until is not None:
            track.shelve_call = track.shelved_until = None
            self._released(track, comment="shelve expired", ts=self.clock.seconds())

    def set_out_of_service(self, point_id: str, on: bool, by: str | None = None, comment: str | None = None) -> Alarm | None:
        """Take a point out of service (its alarms are followed, never annunciated) or put it back.

        The point's C{<point>:out_of_service} alarm, in state C{out_of_service},
        shows every client that it is out (and who did it, and why) until it is back.
        """
        if self.hub.get(point_id) is None and point_id not in self.hub.meta:
            raise UnknownPoint(point_id)
        marker_id = f"{point_id}:{OUT_OF_SERVICE_KIND}"
        now = self.clock.seconds()
        point = self.hub.get(point_id)
        others = [t for t in self._tracks.values() if t.point == point_id and t.kind != OUT_OF_SERVICE_KIND]
        if on:
            self.out_of_service[point_id] = (by, comment)
            marker = self._tracks.get(marker_id)
            if marker is None:
                marker = self._tracks[marker_id] = _Track(
                    marker_id, point_id, OUT_OF_SERVICE_KIND, _Settings("warning", ack_required=False), None,
                    f"{point_id} out of service", point.value if point else None, now)
            marker.condition = True
            alarm = self._refresh(marker, by=by, comment=comment, ts=now, force=True)
            for track in others:
                self._refresh(track)
            return alarm
        if self.out_of_service.pop(point_id, None) is None:
            return None
        alarm = None
        marker = self._tracks.get(marker_id)
        if marker is not None:
            marker.condition = False
            alarm = self._refresh(marker, by=by, comment=comment, ts=now)
        for track in others:
            self._released(track)
        return alarm

    def restore(self, alarms: Iterable[Alarm], seq: int) -> None:
        """At start-up, before any evaluation: the listed alarms and the C{seq} a journal ended at.

        Nothing is sent or journalled; the next transition of each alarm continues
        from its restored state. Points out of service stay out. A shelved alarm
        stays hidden until the end its journal entry holds (C{shelved_until}) and
        is shown again then; one journalled without an end comes back at the
        first reactor turn (never hidden longer than asked).
        """
        for alarm in alarms:
            if alarm.state not in LISTED:
                continue
            self.alarms[alarm.id] = alarm
            self._live.add(alarm.point)
            settings = _Settings(alarm.severity, alarm.ack_required, alarm.latch or alarm.state == "latched",
                                 alarm.group, alarm.notification_class)
            track = self._tracks[alarm.id] = _Track(
                alarm.id, alarm.point, alarm.kind, settings, alarm.limit, alarm.message, alarm.value, alarm.ts,
                condition=alarm.state not in ("returned", "latched"), acked=alarm.state == "acknowledged",
                points=alarm.points,
            )
            if alarm.kind == OUT_OF_SERVICE_KIND:
                self.out_of_service[alarm.point] = (alarm.by, alarm.comment)
            elif alarm.kind == SOURCE_KIND and track.condition:
                source = alarm.point.removesuffix(f"/{SOURCE_POINT}")
                self._flooded.add(source)
                self._down.setdefault(source, set()).update(alarm.points)
            elif alarm.state == "shelved":
                # Hidden until the journalled end, as long as asked and never longer than max_shelve from now.
                until = alarm.shelved_until
                delay = 0.0 if until is None else min(max(0.0, until - self.clock.seconds()), self.max_shelve)
                track.shelved_until = alarm.ts if until is None else until
                track.shelve_call = self.clock.callLater(delay, self._shelve_over, alarm.id)
            elif alarm.state == "suppressed":
                track.suppressed_by = alarm.suppressed_by or alarm.id
                self.clock.callLater(0, self._unsuppress_restored, alarm.id)
        self.seq = max(self.seq, seq)

    def _unsuppress_restored(self, alarm_id: str) -> None:
        track = self._tracks.get(alarm_id)
        if track is not None and track.suppressed_by is not None:
            source = self.source_of(track.point)
            if source not in self._flooded:
                track.suppressed_by = None
                self._released(track)

    # -- reading --------------------------------------------------------------

    def current(self, visible: Callable[[str], bool] = lambda point_id: True) -> list[Alarm]:
        return [a for a in self.alarms.values() if visible(a.point)]

    def replay(self, after_seq: int) -> list[tuple[int, Alarm]] | None:
        """Transitions after C{after_seq}, or L{None} if the ring no longer reaches back that far."""
        if after_seq >= self.seq:
            return []
        if not self.ring or self.ring[0][0] > after_seq + 1:
            return None
        return [(seq, alarm) for seq, alarm in self.ring if seq > after_seq]

    def rate(self, window: float = RATE_WINDOW) -> int:
        """Annunciations (entries into C{active}) in the last C{window} seconds of the engine's clock."""
        cutoff = self.clock.seconds() - window
        recent = self._recent
        while recent and recent[0] <= cutoff:
            recent.popleft()
        return len(recent)

    def close(self) -> None:
        self._follower.close()
        self.hub.remove_listener(self._batch_done)
        for pending in self._pending_on.values():
            _cancel(pending.call)
        for call in self._pending_off.values():
            _cancel(call)
        for track in self._tracks.values():
            _cancel(track.shelve_call)
        self._pending_on.clear()
        self._pending_off.clear()


#: The kinds L{AlarmEngine.evaluate} decides from a point's own samples.
_EVALUATED = ("stale", "fault", "down", "high", "low")


def _beyond(value: Value | None, limits: AlarmLimits | None) -> bool:
    """Whether a numeric value is past one of its limits (no deadband: nothing is on)."""
    if limits is None or value is None or isinstance(value, (bool, str)):
        return False
    return (limits.high is not None and value > limits.high) or (limits.low is not None and value < limits.low)


def _source_id(source: str) -> str:
    return f"{source}/{SOURCE_POINT}:{SOURCE_KIND}"


_SEVERITY_ORDER: tuple[str, ...] = tuple(PRIORITIES.values())


def _rank(severity: str) -> int:
    """0 for the most severe."""
    return _SEVERITY_ORDER.index(severity) if severity in _SEVERITY_ORDER else len(_SEVERITY_ORDER)


def _cancel(call: IDelayedCall | None) -> None:
    if call is not None and call.active():
        call.cancel()
