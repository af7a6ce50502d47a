"""The reactor check that runs after every test (tests/conftest.py clean_reactor), on a fake reactor."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from tests.reactor_janitor import GRACE_SECONDS, clean, describe, leftovers, settle


class Selectable:
    """Stands for a connection registered with the reactor."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lost = False

    def connectionLost(self, reason: Any) -> None:
        self.lost = True

    def __repr__(self) -> str:
        return f"<Selectable {self.name}>"


def spinner(reactor: MemoryReactorClock, io: dict[float, Any] | None = None) -> Any:
    """What pytest_twisted.blockon does for the real reactor: run it until the Deferred fires.

    C{io} maps a time to what the network does then (a peer's close arriving, say).
    """
    pending = dict(io or {})

    def spin(d: Deferred[None]) -> None:
        fired: list[object] = []
        d.addBoth(fired.append)
        while not fired:
            reactor.advance(0.01)
            for due in [t for t in pending if t <= reactor.seconds()]:
                pending.pop(due)()

    return spin


def test_a_clean_reactor_is_reported_clean_without_running_it() -> None:
    reactor = MemoryReactorClock()
    found = settle(reactor, spinner(reactor))
    assert not any(found.values())
    assert reactor.seconds() == 0  # no grace was spent


def test_a_pending_timer_is_reported_with_its_function() -> None:
    reactor = MemoryReactorClock()

    def heartbeat() -> None:
        pass

    reactor.callLater(30, heartbeat)
    found = settle(reactor, spinner(reactor))
    assert len(found["delayed calls"]) == 1
    assert "heartbeat" in describe(found)
    assert reactor.seconds() < 0.1, "with no connection left, the check does not wait out the grace"


def test_a_connection_dropping_within_the_grace_and_cancelling_its_timer_is_clean() -> None:
    reactor = MemoryReactorClock()
    connection = Selectable("closing")
    reactor.addReader(connection)
    timeout = reactor.callLater(5, lambda: None)

    def dropped() -> None:
        reactor.removeReader(connection)
        timeout.cancel()

    found = settle(reactor, spinner(reactor, io={0.3: dropped}))
    assert not any(found.values()), describe(found)


def test_a_timer_that_fires_during_the_grace_is_reported() -> None:
    reactor = MemoryReactorClock()
    connection = Selectable("stuck")
    reactor.addReader(connection)

    def close_handshake_timeout() -> None:
        reactor.removeReader(connection)

    reactor.callLater(1.0, close_handshake_timeout)
    found = settle(reactor, spinner(reactor))
    assert "close_handshake_timeout" in describe(found), "it would have fired inside the next test"


def test_a_connection_that_never_drops_is_reported_after_the_grace_and_cleaned_away() -> None:
    reactor = MemoryReactorClock()
    connection = Selectable("open")
    reactor.addReader(connection)
    reactor.addWriter(connection)
    found = settle(reactor, spinner(reactor))
    assert GRACE_SECONDS <= reactor.seconds() < GRACE_SECONDS + 0.1
    assert found["readers"] == [connection] and found["writers"] == [connection]
    clean(reactor, found)
    assert not any(leftovers(reactor).values())
    assert connection.lost
