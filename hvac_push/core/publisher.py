"""The one way into the hub from other threads: a publisher that hops onto the reactor.

Producers, users' threads and the analytics that publish derived values all
hold a L{Publisher}, never the hub: every call is one C{callFromThread}, so
the hub is only ever touched on the reactor thread.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from hvac_push.core.points import Sample, Status, Value

PublishBatch = Callable[[Sequence[Sample]], None]


class Producer(Protocol):
    """What a data source implements. C{run} is called in its own thread."""

    name: str

    def run(self, publish: PublishBatch, stop: threading.Event) -> None: ...


class SampleSink(Protocol):
    """What a publisher hands samples to, on the reactor thread (the hub implements it)."""

    def publish_many(self, samples: Iterable[Sample]) -> int: ...

    def set_status(self, point_ids: Iterable[str], status: Status) -> int: ...


class CallsFromThreads(Protocol):
    """The part of C{IReactorThreads} a publisher needs."""

    def callFromThread(self, f: Callable[..., object], *args: object, **kwargs: object) -> None: ...


class Publisher:
    """The thread-safe way into the hub, for producers and for users' own threads.

    Every call is a single C{reactor.callFromThread}; the hub itself is only
    touched on the reactor thread.
    """

    def __init__(self, sink: SampleSink, reactor: CallsFromThreads, clock: Callable[[], float] = time.time):
        self._sink = sink
        self._reactor = reactor
        self._clock = clock

    def publish_many(self, samples: Sequence[Sample]) -> None:
        """Hand a batch over; samples without C{ts} are stamped now, in this thread."""
        now = self._clock()
        stamped = [s if s.ts is not None else _stamped(s, now) for s in samples]
        if stamped:
            self._reactor.callFromThread(self._sink.publish_many, stamped)

    __call__ = publish_many

    def publish_status(self, point_ids: Sequence[str], status: Status) -> None:
        """Mark points C{ok}, C{stale}, C{fault} or C{down} without a new value (from any thread)."""
        self._reactor.callFromThread(self._sink.set_status, list(point_ids), status)

    def declare(self, points: Sequence[tuple[str, str]], names: Mapping[str, str] | None = None) -> None:
        """Make points a source found at run time exist before their first value (from any thread).

        They show with status C{waiting}, like the points of the config file
        (L{hvac_push.core.hub.Hub.declare}); C{names} gives display names to the
        points that have none configured. A sink without C{declare} ignores it.
        """
        self._reactor.callFromThread(_declare, self._sink, list(points), dict(names or {}))

    def publish(
        self,
        point_id: str,
        value: Value,
        unit: str = "",
        ts: float | None = None,
        status: Status = "ok",
    ) -> None:
        """Hand one reading over (from any thread)."""
        self.publish_many([Sample(point_id, value, unit, ts, status)])


def _declare(sink: SampleSink, points: list[tuple[str, str]], names: dict[str, str]) -> None:
    """On the reactor thread: the hub's C{declare}, then display names where none is configured."""
    declare = getattr(sink, "declare", None)
    if declare is None:
        return
    declare(points)
    meta = getattr(sink, "meta", None)
    configure = getattr(sink, "configure", None)
    if not isinstance(meta, dict) or configure is None:
        return
    from dataclasses import replace

    from hvac_push.core.points import PointMeta

    for point_id, name in names.items():
        current = meta.get(point_id) or PointMeta()
        if not current.name and name:
            configure(point_id, replace(current, name=name))


def _stamped(sample: Sample, ts: float) -> Sample:
    return Sample(sample.point_id, sample.value, sample.unit, ts, sample.status)


__all__ = ["CallsFromThreads", "Producer", "PublishBatch", "Publisher", "SampleSink"]
