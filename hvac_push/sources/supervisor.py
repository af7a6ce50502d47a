"""Running producers in supervised threads: restart with backoff, never take the reactor down.

A producer is any object with a C{name} and a C{run(publish, stop)} method that
blocks until C{stop} is set. It never sees the hub: it is handed a thread-safe
C{publish} callable. If C{run} raises (or returns early) it is logged and
restarted after an exponential backoff, without touching the reactor or the
other producers.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from hvac_push.core.points import Sample
from hvac_push.core.publisher import Producer, Publisher

#: A reactor providing IReactorTime, IReactorThreads and IReactorCore (zope
#: interfaces cannot be combined into one static type).
ReactorLike = Any


class ProducerState:
    """What the health page and metrics report about one producer."""

    def __init__(self, name: str):
        self.name = name
        self.state = "idle"
        self.restarts = 0
        self.last_error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state, "restarts": self.restarts, "last_error": self.last_error}


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
                self.producer.run(self._publish, self._stop)
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

    def _publish(self, samples: Sequence[Sample]) -> None:
        self.point_ids.update(s.point_id for s in samples)
        self._publisher.publish_many(samples)

    def _set_state(self, state: str) -> None:
        self.status.state = state

    def _crashed(self, failure: Failure, backoff: float) -> None:
        self.status.state = "backoff"
        self.status.restarts += 1
        self.status.last_error = failure.getErrorMessage()[:200]
        self.log.failure(
            "producer {name} crashed; restarting in {backoff:.1f}s",
            failure,
            name=self.producer.name,
            backoff=backoff,
        )

    def _returned_early(self, backoff: float) -> None:
        self.status.state = "backoff"
        self.status.restarts += 1
        self.log.warn(
            "producer {name} returned without being stopped; restarting in {backoff:.1f}s",
            name=self.producer.name,
            backoff=backoff,
        )


def _fire_once(d: Deferred[None]) -> None:
    if not d.called:
        d.callback(None)


__all__ = ["ProducerService", "ProducerState", "ReactorLike"]
