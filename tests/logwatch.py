"""Collect twisted.logger events during a test, to assert that nothing logged a traceback."""

from __future__ import annotations

from typing import Any, Iterator
from contextlib import contextmanager

from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from zope.interface import implementer


@implementer(ILogObserver)
class LogWatch:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def failures(self) -> list[str]:
        """Every event that carries a traceback (log.failure, or a legacy isError)."""
        found = []
        for event in self.events:
            if "log_failure" in event or event.get("isError"):
                failure = event.get("log_failure")
                found.append(f"{formatEvent(event)}\n{failure.getTraceback() if failure is not None else ''}")
        return found

    def text(self) -> str:
        """All events as text, with their raw fields, to search for secrets."""
        return "\n".join(f"{formatEvent(e)} {sorted((k, repr(v)) for k, v in e.items() if k != 'log_logger')}"
                         for e in self.events)


@contextmanager
def watch_log() -> Iterator[LogWatch]:
    watch = LogWatch()
    globalLogPublisher.addObserver(watch)
    try:
        yield watch
    finally:
        globalLogPublisher.removeObserver(watch)
