"""Shared fixtures. The reactor is imported inside functions, never at module level."""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

import pytest
import pytest_twisted


class RunningServer:
    """A started L{PushService} listening on a real loopback port."""

    def __init__(self, service: Any, port: Any):
        self.service = service
        self.listening = port
        self.port: int = port.getHost().port
        self.hub = service.hub
        self.factory = service.factory


async def start_server(producers: list[Any] = (), **options: Any) -> RunningServer:  # type: ignore[assignment]
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from hvac_push.ops.service import PushService

    options.setdefault("interval", 0.05)
    service = PushService(reactor, **options)
    for producer in producers:
        service.add_producer(producer)
    service.startService()
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(service.site())
    return RunningServer(service, port)


async def stop_server(server: RunningServer) -> None:
    """Stop listening, close every client (1001) and wait until all connections are gone."""
    await server.listening.stopListening()
    await server.service.stopService()
    assert not server.factory.connections


@pytest_twisted.async_yield_fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server()
    yield running
    await stop_server(running)


@pytest.fixture(autouse=True)
def clean_reactor(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves delayed calls, readers or writers on the reactor, as trial does.

    It runs after every test (autouse; the teardowns of the test's own
    fixtures have run by then). Connections already closing get a short grace
    to drop; a test that leaves nothing (most synchronous and subprocess
    tests) costs nothing. What it finds is removed, so the next test starts
    clean, and reported by name in the failure.
    """
    yield
    from twisted.internet import reactor

    from tests.reactor_janitor import clean, describe, settle

    found = settle(reactor, pytest_twisted.blockon)
    if any(found.values()):
        report = describe(found)
        clean(reactor, found)
        pytest.fail(f"{request.node.nodeid} left the reactor dirty:\n{report}", pytrace=False)
