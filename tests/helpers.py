"""Small test-only utilities."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


def sleep(seconds: float) -> Deferred[None]:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


async def within(seconds: float, awaitable: Awaitable[T] | Deferred[T]) -> T:
    """Await C{awaitable}, failing the test if it takes longer than C{seconds}."""
    from twisted.internet import reactor

    d = awaitable if isinstance(awaitable, Deferred) else Deferred.fromCoroutine(awaitable)  # type: ignore[arg-type]
    d.addTimeout(seconds, reactor)
    return await d


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.01) -> None:
    """Poll C{predicate} on the reactor until it is true, bounded by C{timeout}."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await sleep(step)
        waited += step
