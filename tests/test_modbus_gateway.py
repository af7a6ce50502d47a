"""Modbus as met in the field, against a real pymodbus server written in the tests: several unit ids behind
one gateway share one TCP connection, transient exceptions are retried without changing the read plan,
"illegal address" splits a batch that is tried whole again later, and points keep their own intervals."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import psutil
import pytest
import pytest_twisted

from hvac_push.sources.modbus import ModbusPoint, ModbusProducer, encode
from hvac_push.sources.modbus_gateway import GatewayPool
from hvac_push.testing import connect
from tests.brokers import ModbusServer
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, until_state, within

READ_HOLDING = 3


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def gateway_server() -> Iterator[ModbusServer]:
    """A gateway answering for unit ids 1 and 2."""
    server = ModbusServer(device_ids=(1, 2))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _producer(
    server: ModbusServer, name: str, unit_id: int, points: Sequence[ModbusPoint], **kw: Any
) -> ModbusProducer:
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("timeout", 0.5)
    kw.setdefault("initial_backoff", 0.05)
    kw.setdefault("max_backoff", 0.2)
    kw.setdefault("retry_delay", 0.01)
    return ModbusProducer(name, "127.0.0.1", points, port=server.port, unit_id=unit_id, **kw)


def _server_side_connections(port: int) -> int:
    """Established TCP connections whose local end is the server's port (the server runs in this process)."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


@pytest_twisted.ensureDeferred
async def test_two_unit_ids_behind_one_gateway_share_one_tcp_connection(gateway_server):
    chiller = [
        ModbusPoint("plant/chiller-1/supply_temp", 100, type="float32", unit="°C"),
        ModbusPoint("plant/chiller-1/running", 104, bit=0),
    ]
    meter = [
        ModbusPoint("plant/meter-1/power", 100, type="float64", unit="kW"),
        ModbusPoint("plant/meter-1/energy", 104, type="uint64", byte_order="little", unit="kWh"),
    ]
    gateway_server.set("holding", 100, encode(chiller[0], 6.5), device_id=1)
    gateway_server.set("holding", 104, [0b1], device_id=1)
    gateway_server.set("holding", 100, encode(meter[0], 87.25), device_id=2)
    gateway_server.set("holding", 104, encode(meter[1], 1_234_567_890_123), device_id=2)
    pool = GatewayPool()
    producers = [
        _producer(gateway_server, "modbus.chiller-1", 1, chiller, gateways=pool),
        _producer(gateway_server, "modbus.meter-1", 2, meter, gateways=pool),
    ]
    running = await start_server(producers)
    try:
        client = await within(5, connect(reactor(), running.port))
        state = await until_state(client, lambda s: len(s) == 4)
        assert state["plant/chiller-1/supply_temp"]["value"] == 6.5
        assert state["plant/chiller-1/running"]["value"] is True
        assert state["plant/meter-1/power"]["value"] == 87.25
        assert state["plant/meter-1/energy"]["value"] == 1_234_567_890_123
        await eventually(lambda: all(p.polls >= 5 for p in producers))
        # The server saw one TCP connection, and it is the only one open.
        assert gateway_server.connections == 1
        assert _server_side_connections(gateway_server.port) == 1
        # Each unit's points are read together: one request per unit per poll.
        seen = set(gateway_server.requests)
        assert seen == {(1, READ_HOLDING, 100, 5), (2, READ_HOLDING, 100, 8)}
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)
    assert pool.get("127.0.0.1", gateway_server.port) is None  # the last source closed it
    await eventually(lambda: _server_side_connections(gateway_server.port) == 0)
