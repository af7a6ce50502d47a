"""Running producers in supervised threads: restart with backoff, never take the reactor down.

A producer is any object with a C{name} and a C{run(publish, stop)} method that
blocks until C{stop} is set. It never sees the hub: it is handed a thread-safe
C{publish} callable (a L{ProducerLink}, through which a source also reports
whether it reaches its device, for the health page). If C{run} raises (or
returns early) it is logged and restarted after an exponential backoff,
without touching the reactor or the other producers.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from hvac_push.core.points import Sample, Status
from hvac_push.core.publisher import Producer, Publisher

#: A reactor providing IReactorTime, IReactorThreads and IReactorCore (zope
#: interfaces cannot be combined into one static type).
ReactorLike = Any


class ProducerState:
    """What the health page and metrics report about one producer.

    C{state} is the thread's life (C{idle}, C{running}, C{backoff},
    C{stopped}); C{connected} is whether the source reaches its device or
    broker, as it last reported (a source that does not report is taken as
    connected once it hands a sample over). Connection fields are written on
    the reactor thread; C{last_sample} and the error counts come straight from
    the producer's thread.
    """

    def __init__(self, name: str):
        self.name = name
        self.state = "idle"
        self.restarts = 0
        self.connected = False
        #: The newest failure (crash, or lost device), kept after recovery with its time.
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        #: Epoch seconds at which the newest batch of samples was handed over.
        self.last_sample: float | None = None
        self._errors: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count_error(self, reason: str, count: int = 1) -> None:
        """Count failed reads or dropped messages by reason (any thread)."""
        with self._lock:
            self._errors[reason] += count

    def errors(self) -> dict[str, int]:
        """Failures counted so far, by reason."""
        with self._lock:
            return dict(self._errors)

    def set_connection(self, error: str | None) -> None:
        """Record a connection report (reactor thread): L{None} means reached."""
        if error is None:
            self.connected = True
        else:
            self.connected = False
            self.failed(error)

    def failed(self, error: str) -> None:
        self.last_error = error[:200]
        self.last_error_at = time.time()

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "connected": self.connected,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_sample": self.last_sample,
            "restarts": self.restarts,
            "errors": self.errors(),
        }


class ProducerLink:
    """What a supervised producer's C{run} is handed as C{publish}.

    Calling it hands a batch of samples over, like any publish callable.
    Sources with a device or broker also report through it, from any thread
    (see L{report_connection} and L{count_error}, which accept any publish
    callable): whether the device is reached, and reads that failed. Its
    C{publish_status} marks points without new values, including points that
    have never had one (L{hvac_push.sources.common.PointStates} uses it).
    """

    def __init__(self, service: "ProducerService"):
        self._service = service
        self._reports_connection = False

    def __call__(self, samples: Sequence[Sample]) -> None:
        if not samples:
            return
        service = self._service
        service.point_ids.update(s.point_id for s in samples)
        service._publisher.publish_many(samples)
        state = service.status
        state.last_sample = time.time()
        if not state.connected and not self._reports_connection:
            service._in_reactor(state.set_connection, None)

    def publish_status(self, point_ids: Sequence[str], status: Status) -> None:
        self._service.point_ids.update(point_ids)
        self._service._publisher.publish_status(point_ids, status)

    def connection(self, error: str | None) -> None:
        """The device or broker is reached (C{error} L{None}), or not, and why."""
        self._reports_connection = True
        self._service._in_reactor(self._service.status.set_connection, error)

    def count_error(self, reason: str, count: int = 1) -> None:
        self._service.status.count_error(reason, count)

    def declare(self, points: Sequence[tuple[str, str]], names: dict[str, str] | None = None) -> None:
        """Points the source found at run time (Home Assistant discovery): they exist from now on, C{waiting}."""
        self._service.point_ids.update(point_id for point_id, _ in points)
        self._service._publisher.declare(points, names)


def report_connection(publish: object, error: str | None) -> None:
    """For sources: say whether the device or broker is reached (L{None}) or why not.

    A no-op unless C{publish} is a supervisor's L{ProducerLink}, so a source
    also runs with a plain callable (in tests, or embedded).
    """
    if isinstance(publish, ProducerLink):
        publish.connection(error)


def declare_points(publish: object, points: Sequence[tuple[str, str]], names: dict[str, str] | None = None) -> None:
    """For sources: C{(point id, unit)} points found at run time, with display names; a no-op on a plain callable."""
    if isinstance(publish, ProducerLink):
        publish.declare(points, names)


def count_error(publish: object, reason: str, count: int = 1) -> None:
    """For sources: count C{count} failures of one kind (a failed read, a malformed message)."""
    if isinstance(publish, ProducerLink):
        publish.count_error(reason, count)


class ProducerService(Service):
    """Runs one producer in a daemon thread and restarts it with backoff when it fails.

    While a crashed producer waits to be restarted, the points it had
    published are marked C{fault}; its next samples bring them back to C{ok}.
    """

    log = Logger()

    def __init__(
        self,
        producer: Producer,
        publisher: Publisher,
        reactor: ReactorLike,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        stop_timeout: float = 10.0,
    ):
        self.producer = producer
        self.setName(f"producer:{producer.name}")
        self._publisher = publisher
        self._reactor = reactor
        #: Point ids this producer has published (written from its thread only).
        self.point_ids: set[str] = set()
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.stop_timeout = stop_timeout
        self.status = ProducerState(producer.name)
        #: What C{run} is handed as its C{publish}.
        self.link = ProducerLink(self)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._stop.clear()
        self._finished = Deferred()
        self._thread = threading.Thread(
            target=self._supervise, name=f"hvac-push {self.producer.name}", daemon=True
        )
        self._thread.start()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self._stop.set()
        finished, self._finished = self._finished, None
        if finished is None or self._thread is None or not self._thread.is_alive():
            return None
        # Wait without blocking the reactor; give up (the thread is a daemon) after a bound.
        return finished.addTimeout(self.stop_timeout, self._reactor, onTimeoutCancel=self._gave_up)

    def _gave_up(self, result: object, timeout: float) -> None:
        self.log.warn(
            "producer {name} did not stop within {timeout}s; abandoning its thread",
            name=self.producer.name,
            timeout=self.stop_timeout,
        )

    def _in_reactor(self, f: Callable[..., object], *args: object, **kw: object) -> None:
        try:
            self._reactor.callFromThread(f, *args, **kw)
        except Exception:
            pass  # the reactor is gone; nothing left to tell

    def _supervise(self) -> None:
        """Thread body: run, and after a failure wait (interruptibly) and run again."""
        finished = self._finished
        backoff = self.initial_backoff
        while not self._stop.is_set():
            started = time.monotonic()
            self._in_reactor(self._set_state, "running")
            try:
                self.producer.run(self.link, self._stop)
            except Exception:
                failure = Failure()
                self._in_reactor(self._crashed, failure, backoff)
                if self.point_ids and not self._stop.is_set():
                    self._publisher.publish_status(sorted(self.point_ids), "fault")
            else:
                if self._stop.is_set():
                    break
                self._in_reactor(self._returned_early, backoff)
            if time.monotonic() - started > 60:
                backoff = self.initial_backoff
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.max_backoff)
        self._in_reactor(self._set_state, "stopped")
        if finished is not None:
            self._in_reactor(_fire_once, finished)

    def _set_state(self, state: str) -> None:
        self.status.state = state
        if state == "stopped":
            self.status.connected = False

    def _crashed(self, failure: Failure, backoff: float) -> None:
        self.status.state = "backoff"
        self.status.restarts += 1
        self.status.connected = False
        self.status.failed(failure.getErrorMessage())
        self.log.failure(
            "producer {name} crashed; restarting in {backoff:.1f}s",
            failure,
            name=self.producer.name,
            backoff=backoff,
        )

    def _returned_early(self, backoff: float) -> None:
        self.status.state = "backoff"
        self.status.restarts += 1
        self.status.connected = False
        self.log.warn(
            "producer {name} returned without being stopped; restarting in {backoff:.1f}s",
            name=self.producer.name,
            backoff=backoff,
        )


def _fire_once(d: Deferred[None]) -> None:
    if not d.called:
        d.callback(None)


__all__ = [
    "ProducerLink", "ProducerService", "ProducerState", "ReactorLike", "count_error", "declare_points",
    "report_connection",
]
