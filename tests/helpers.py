"""Small test-only utilities."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

from twisted.internet.defer import Deferred

from hvac_push.core.hub import Hub
from hvac_push.core.points import Point

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


async def until_state(client: Any, predicate: Callable[[dict[str, Any]], bool], seconds: float = 10.0) -> dict[str, Any]:
    """Merge a client's snapshots and updates until C{predicate(points)} holds; return the points.

    Only messages from now on are merged, so a point the predicate names may not have arrived yet: a
    C{KeyError} from the predicate means "not yet" (an update of another point can come first).
    """
    state: dict[str, Any] = {}

    async def loop() -> dict[str, Any]:
        while True:
            message = await client.next()
            if message["type"] in ("snapshot", "update"):
                state.update(message["points"])
                try:
                    done = predicate(state)
                except KeyError:
                    done = False
                if done:
                    return state

    return await within(seconds, loop())


def point_of(hub: Hub, point_id: str) -> Point:
    """The hub's point C{point_id}, failing the test if it has none."""
    point = hub.get(point_id)
    assert point is not None, f"the hub has no point {point_id}"
    return point
