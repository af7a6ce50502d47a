"""Shared fixtures. The reactor is imported inside functions, never at module level."""

from __future__ import annotations

from typing import Any, AsyncIterator

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
