"""The store as a Twisted service: what is restored at start, recorded while running, and read back.

Start-up (before the reactor runs, once): the hub gets every point's last
value marked C{stale}, the alarm engine its listed alarms and journal C{seq},
the trend rings their recent samples. Running: a L{HubFollower} collects
every accepted sample, handed to the L{StoreWriter} thread every
C{flush_every} seconds of the reactor's clock; alarm transitions are handed
over at once; retention runs every C{expire_every} seconds. Reads run in a
small thread pool of their own and come back as Deferreds.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from hvac_push.analytics.alarms import Alarm, AlarmEngine
from hvac_push.analytics.history import History
from hvac_push.core.follow import HubFollower
from hvac_push.core.hub import Hub
from hvac_push.core.points import Point, Sample
from hvac_push.store.interface import JournalEntry, Retention, Store, StoreError
from hvac_push.store.writer import StoreWriter

T = TypeVar("T")


def journal_entry(seq: int, alarm: Alarm) -> JournalEntry:
    return JournalEntry(
        alarm.ts, seq, alarm.id, alarm.point, alarm.kind, alarm.state, alarm.severity,
        alarm.value, alarm.limit, alarm.message, alarm.by, alarm.comment, alarm.shelved_until,
    )


def alarm_from(entry: JournalEntry, since: float | None = None) -> Alarm:
    return Alarm(
        entry.alarm, entry.point, entry.kind, entry.state, entry.severity, entry.value, entry.limit,
        entry.ts, entry.message, entry.by, entry.comment, shelved_until=entry.shelved_until,
        since=entry.ts if since is None else since,
    )


class StoreService(Service):
    """Records a hub and an alarm engine into C{store}, and reads it back off the reactor thread."""

    log = Logger()

    def __init__(
        self,
        store: Store,
        reactor: Any,
        *,
        retention: Retention = Retention(),
        flush_every: float = 0.25,
        expire_every: float = 600.0,
        max_pending: int = 500_000,
        readers: int = 2,
    ):
        self.store = store
        self.reactor = reactor
        self.retention = retention
        self.flush_every = flush_every
        self.expire_every = expire_every
        self.writer = StoreWriter(store, max_pending=max_pending)
        self.setName("store")
        self._pending: list[Point] = []
        #: The ts last recorded per point: a status change (same ts) is not a new sample.
        self._recorded: dict[str, float] = {}
        self._follower: HubFollower | None = None
        self._flush_loop = LoopingCall(self.flush)
        self._flush_loop.clock = reactor
        self._expire_loop = LoopingCall(self.expire)
        self._expire_loop.clock = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=max(1, readers), name="hvac-push store reader")
        #: Rows the last retention run deleted.
        self.expired = 0

    # -- start-up: restore, then follow -------------------------------------------

    def restore(self, hub: Hub) -> int:
        """Put the stored last values into C{hub} as C{stale}; return how many.

        Call it once, before anything follows the hub, so that restored
        values raise no alarm and are not written back. Blocking: start-up only.
        """
        points = self.store.last_values()
        # A point stored before it ever had a value (declared, waiting) has nothing to restore.
        hub.publish_many(Sample(p.point_id, p.value, p.unit, p.ts, "stale") for p in points if p.value is not None)
        for point in points:
            self._recorded[point.point_id] = point.ts
        return len(points)

    def restore_alarms(self, alarms: AlarmEngine) -> int:
        """Give C{alarms} the listed alarms (acknowledged state, who and why included) and the journal's C{seq}."""
        starts = self.store.alarm_starts()
        listed = [alarm_from(e, starts.get(e.alarm)) for e in self.store.current_alarms()]
        alarms.restore(listed, self.store.last_seq())
        return len(listed)

    def preload(self, history: History, now: float) -> None:
        """Fill the trend rings with what the store holds of their window (start-up only, blocking)."""
        for point_id in self.store.point_ids():
            history.preload(point_id, self.store.raw(point_id, now - history.window, now, history.max_samples))

    def follow(self, hub: Hub, alarms: AlarmEngine | None = None) -> None:
        """Record every change C{hub} accepts from now on, and every transition of C{alarms}."""
        self._follower = HubFollower(hub, self._record)
        if alarms is not None:
            alarms.add_listener(self._journal)

    def _record(self, point: Point) -> None:
        # A status change keeps the reading's ts (not a new sample); a point with no value has none to keep.
        if point.value is None or self._recorded.get(point.point_id) == point.ts:
            return
        self._recorded[point.point_id] = point.ts
        self._pending.append(point)

    def _journal(self, seq: int, alarm: Alarm) -> None:
        # At once, not with the next flush: an acknowledgement must survive a crash a moment later.
        self.writer.add_journal([journal_entry(seq, alarm)])

    def journal_written(self) -> Deferred[None]:
        """Fires (on the reactor thread) once every alarm transition handed over so far is committed.

        It waits while the database is away; it fails with L{StoreError} if the
        service stops before they could be written. An operator's confirmation
        (C{acked}) is sent only then, so a crash right after it loses nothing.
        """
        done: Deferred[None] = Deferred()

        def written(ok: bool) -> None:
            if ok:
                self.reactor.callFromThread(done.callback, None)
            else:
                self.reactor.callFromThread(done.errback, StoreError("the store stopped before the journal was written"))

        self.writer.when_written(written)
        return done

    # -- running ------------------------------------------------------------------

    def flush(self) -> None:
        """Hand the samples collected since the last flush to the writer thread."""
        if self._pending:
            pending, self._pending = self._pending, []
            self.writer.add_samples(pending)

    def expire(self) -> None:
        """Queue one retention run, cut off at the reactor clock's now."""
        now = self.reactor.seconds()
        retention = self.retention

        def run(store: Store) -> None:
            self.expired = store.expire(now, retention)

        self.writer.add_task(run)

    def startService(self) -> None:
        super().startService()
        self.writer.start()
        self._pool.start()
        self._flush_loop.start(self.flush_every, now=False)
        self._expire_loop.start(self.expire_every, now=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for loop in (self._flush_loop, self._expire_loop):
            if loop.running:
                loop.stop()
        if self._follower is not None:
            self._follower.catch_up()
        self.flush()
        self.writer.close()
        if not self._pool.started:  # never started: there is no thread to wait for
            self.store.close()
            return succeed(None)
        done: Deferred[Any] = deferToThreadPool(self.reactor, self._pool, self._finish, 10.0)
        return done.addBoth(lambda _: self._pool.stop())

    def _finish(self, timeout: float) -> None:
        """On a reader thread: wait for the writer's last transaction, then close every connection."""
        if not self.writer.join(timeout):
            self.log.error("store: the writer did not finish within {timeout} s", timeout=timeout)
        self.store.close()

    # -- reading ------------------------------------------------------------------

    def read(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """C{work(store, *args)} on a reader thread; its result (or failure) in a Deferred."""
        if not self._pool.started:
            return fail(RuntimeError("the store is not running"))
        return deferToThreadPool(self.reactor, self._pool, work, self.store, *args)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """A readiness check that never fails: the stream goes on without the database; the detail says how it is."""
        stats = self.writer.stats
        return True, {
            "store": getattr(self.store, "description", "store"),
            "writing": stats.healthy,
            "pending": self.writer.pending,
            "dropped": stats.samples_dropped,
        }


__all__ = ["StoreService", "alarm_from", "journal_entry"]
