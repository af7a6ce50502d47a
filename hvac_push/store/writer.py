"""The writer thread: every database write, batched, bounded, and retried while the database is away.

The reactor only appends to in-memory lists under a lock (microseconds) and
never waits for the database. The thread takes everything pending, writes it
in one transaction, and on failure puts it back and retries with a doubling
pause. Samples waiting are bounded: past the bound the oldest are dropped
and counted (newest data is worth more after an outage). Alarm journal
entries are written at once and are only dropped past a much larger bound.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from twisted.logger import Logger

from hvac_push.core.points import Point
from hvac_push.store.interface import JournalEntry, Store, StoreError

Task = Callable[[Store], object]
#: Told C{True} once what was queued before it is committed, C{False} if the writer gave up on it.
Barrier = Callable[[bool], object]


@dataclass
class WriterStats:
    """Counters for /metrics and health; written by the writer thread, read anywhere."""

    samples_written: int = 0
    journal_written: int = 0
    transactions: int = 0
    samples_dropped: int = 0
    journal_dropped: int = 0
    failures: int = 0
    healthy: bool = True
    last_error: str = ""
    #: Seconds the newest transaction took.
    last_write_seconds: float = 0.0


class StoreWriter:
    """Owns one thread that writes what the reactor hands it to C{store}."""

    log = Logger()

    def __init__(
        self,
        store: Store,
        *,
        max_pending: int = 500_000,
        max_journal: int = 100_000,
        batch_max: int = 20_000,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
    ):
        self.store = store
        self.max_pending = max_pending
        self.max_journal = max_journal
        self.batch_max = batch_max
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.stats = WriterStats()
        self._cond = threading.Condition()
        self._samples: deque[Point] = deque()
        self._journal: list[JournalEntry] = []
        self._tasks: list[Task] = []
        self._barriers: list[Barrier] = []
        self._closing = False
        self._busy = False
        self._last_drop_log = 0.0
        self._thread = threading.Thread(target=self._run, name="hvac-push store writer", daemon=True)

    # -- any thread ---------------------------------------------------------------

    def start(self) -> None:
        if not self._thread.is_alive() and not self._closing:
            self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._samples) + len(self._journal)

    def add_samples(self, points: Iterable[Point]) -> None:
        """Queue samples for the next transaction; past C{max_pending} the oldest are dropped and counted."""
        with self._cond:
            self._samples.extend(points)
            over = len(self._samples) - self.max_pending
            if over > 0:
                for _ in range(over):
                    self._samples.popleft()
                self._dropped(over)
            self._cond.notify()

    def add_journal(self, entries: Iterable[JournalEntry]) -> None:
        """Queue alarm transitions; the thread writes them at once."""
        with self._cond:
            self._journal.extend(entries)
            over = len(self._journal) - self.max_journal
            if over > 0:
                del self._journal[:over]
                self.stats.journal_dropped += over
                self.log.error("store: dropped {count} alarm journal entries (the database is unavailable)", count=over)
            self._cond.notify()

    def add_task(self, task: Task) -> None:
        """Run C{task(store)} on the writer thread after the pending writes (retention, maintenance)."""
        with self._cond:
            self._tasks.append(task)
            self._cond.notify()

    def when_written(self, barrier: Barrier) -> None:
        """Call C{barrier(True)} on the writer thread once every journal entry queued before it is committed.

        Kept across failed attempts (it waits for the database to come back);
        C{barrier(False)} when the writer shuts down without having written them.
        """
        with self._cond:
            self._barriers.append(barrier)
            self._cond.notify()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending or running (tests, tools); True if it got there in time."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not (self._busy or self._samples or self._journal or self._tasks or self._barriers), timeout
            )

    def close(self) -> None:
        """Ask the thread to write what is pending (one last try) and end."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end (blocking: not on the reactor thread); True if it did."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the writer thread --------------------------------------------------------

    def _dropped(self, count: int) -> None:
        self.stats.samples_dropped += count
        now = time.monotonic()
        if now - self._last_drop_log >= 60.0:
            self._last_drop_log = now
            self.log.error(
                "store: dropped {count} samples, {total} so far: more are waiting than the bound of {bound}",
                count=count, total=self.stats.samples_dropped, bound=self.max_pending,
            )

    def _run(self) -> None:
        pause = self.retry_min
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closing or self._samples or self._journal or self._tasks or self._barriers
                )
                if not (self._samples or self._journal or self._tasks or self._barriers):
                    return
                count = min(len(self._samples), self.batch_max)
                samples = [self._samples.popleft() for _ in range(count)]
                journal, self._journal = self._journal, []
                tasks, self._tasks = self._tasks, []
                barriers, self._barriers = self._barriers, []
                closing = self._closing
                self._busy = True
            try:
                ok = self._write(samples, journal)
                if ok:
                    pause = self.retry_min
                    for barrier in barriers:
                        self._tell(barrier, True)
                    for task in tasks:
                        self._run_task(task)
                else:
                    self._put_back(samples, journal, tasks)
                    with self._cond:
                        self._barriers[:0] = barriers
                    if closing:
                        self._give_up()
                        return
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if not ok:
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, pause)
                pause = min(pause * 2, self.retry_max)

    def _write(self, samples: list[Point], journal: list[JournalEntry]) -> bool:
        if not samples and not journal:
            return True
        started = time.monotonic()
        try:
            self.store.write(samples, journal)
        except StoreError as e:
            self.stats.failures += 1
            self.stats.last_error = str(e)[:300]
            if self.stats.healthy:
                self.stats.healthy = False
                self.log.error(
                    "store: writing failed, the live stream goes on; buffering up to {bound} samples and "
                    "retrying: {error}", bound=self.max_pending, error=self.stats.last_error,
                )
            return False
        except Exception:
            # A bug, not the database: retrying the same batch would fail forever and block every later write.
            self.log.failure("store: a batch could not be written and is dropped")
            self.stats.failures += 1
            self.stats.samples_dropped += len(samples)
            self.stats.journal_dropped += len(journal)
            return True
        self.stats.last_write_seconds = time.monotonic() - started
        self.stats.transactions += 1
        self.stats.samples_written += len(samples)
        self.stats.journal_written += len(journal)
        if not self.stats.healthy:
            self.stats.healthy = True
            self.log.info(
                "store: writing resumed after {failures} failed attempts ({dropped} samples dropped so far)",
                failures=self.stats.failures, dropped=self.stats.samples_dropped,
            )
        return True

    def _tell(self, barrier: Barrier, written: bool) -> None:
        try:
            barrier(written)
        except Exception:
            self.log.failure("store: a write barrier failed")

    def _run_task(self, task: Task) -> None:
        try:
            task(self.store)
        except Exception as e:
            self.log.error("store: maintenance failed (tried again next period): {error}", error=str(e)[:300])

    def _put_back(self, samples: list[Point], journal: list[JournalEntry], tasks: list[Task]) -> None:
        with self._cond:
            self._samples.extendleft(reversed(samples))
            over = len(self._samples) - self.max_pending
            if over > 0:
                for _ in range(over):
                    self._samples.popleft()
                self._dropped(over)
            self._journal[:0] = journal
            # Maintenance is periodic: a failed run is simply skipped.

    def _give_up(self) -> None:
        with self._cond:
            lost_samples, lost_journal = len(self._samples), len(self._journal)
            self._samples.clear()
            self._journal.clear()
            self._tasks.clear()
            barriers, self._barriers = self._barriers, []
        for barrier in barriers:
            self._tell(barrier, False)
        if lost_samples or lost_journal:
            self.stats.samples_dropped += lost_samples
            self.stats.journal_dropped += lost_journal
            self.log.error(
                "store: shutting down with the database unavailable: {samples} samples and {journal} alarm "
                "journal entries not written", samples=lost_samples, journal=lost_journal,
            )
