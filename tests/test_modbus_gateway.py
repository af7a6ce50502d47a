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
from tests.helpers import eventually, point_of, until_state, within

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


class Burst:
    """Refuses the next C{count} requests with exception C{code} (called in the server's thread)."""

    def __init__(self, code: int, count: int, unit: int | None = None):
        self.code = code
        self.left = count
        self.unit = unit

    def __call__(self, request: tuple[int, int, int, int]) -> int | None:
        if self.left <= 0 or (self.unit is not None and request[0] != self.unit):
            return None
        self.left -= 1
        return self.code


@pytest_twisted.ensureDeferred
async def test_after_a_burst_of_device_busy_the_polls_are_back_to_one_request_per_batch(gateway_server):
    points = [
        ModbusPoint("plant/ahu-1/supply_temp", 100, type="float32", unit="°C"),
        ModbusPoint("plant/ahu-1/fan_speed", 102, unit="%"),
        ModbusPoint("plant/ahu-1/damper", 105, unit="%"),
    ]
    gateway_server.set("holding", 100, encode(points[0], 16.5) + [40, 0, 0, 30])
    producer = _producer(gateway_server, "modbus.ahu-1", 1, points, gateways=GatewayPool(), retries=2)
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        await until_state(client, lambda s: len(s) == 3)
        whole = (1, READ_HOLDING, 100, 6)
        assert set(gateway_server.requests) == {whole}

        burst = Burst(0x06, 5)  # one poll gives up after 3 tries (its points: fault), the next gets through
        gateway_server.refuse = burst
        state = await until_state(client, lambda s: s.get("plant/ahu-1/fan_speed", {}).get("status") == "fault")
        await eventually(lambda: burst.left == 0)
        gateway_server.set("holding", 102, [55])
        state = await until_state(
            client, lambda s: s.get("plant/ahu-1/fan_speed", {}).get("value") == 55
            and s.get("plant/ahu-1/fan_speed", {}).get("status") == "ok",
        )
        assert all(p["status"] == "ok" for p in state.values())
        after = len(gateway_server.requests)
        await eventually(lambda: len(gateway_server.requests) >= after + 10)
        # Every request, before, during and after the burst, was the whole batch: nothing was split.
        assert set(gateway_server.requests) == {whole}
        assert producer.read_plan() == [("holding", 100, 6)]
        assert running.service.producers[0].status.errors()["busy"] == 5
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_an_illegal_address_splits_a_batch_that_is_tried_whole_again_later(gateway_server):
    points = [ModbusPoint("plant/crac-1/setpoint", 10, scale=0.1), ModbusPoint("plant/crac-1/humidity", 12)]
    gateway_server.set("holding", 10, [215, 0, 48])
    whole, parts = (1, READ_HOLDING, 10, 3), {(1, READ_HOLDING, 10, 1), (1, READ_HOLDING, 12, 1)}
    refusing = [True]
    gateway_server.refuse = lambda r: 0x02 if refusing[0] and r[3] > 1 else None  # a device that reads no gaps
    producer = _producer(gateway_server, "modbus.crac-1", 1, points, gateways=GatewayPool(), rejoin_after=3)
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        state = await until_state(client, lambda s: len(s) == 2)
        assert state["plant/crac-1/setpoint"]["value"] == 21.5 and state["plant/crac-1/humidity"]["value"] == 48
        assert all(p["status"] == "ok" for p in state.values())  # read one by one, both are fine

        def whole_reads() -> list[int]:
            return [i for i, r in enumerate(gateway_server.requests) if r == whole]

        await eventually(lambda: len(whole_reads()) >= 3)
        first, second, third = whole_reads()[:3]
        assert set(gateway_server.requests[first + 1 : third]) - {whole} == parts
        # Tried whole again after 3 polls by parts, then after 6 (it was refused again).
        assert (second - first - 1, third - second - 1) == (3 * 2, 6 * 2)
        assert producer.read_plan() == [("holding", 10, 1), ("holding", 12, 1)]

        refusing[0] = False  # e.g. the device's firmware was updated
        await eventually(lambda: producer.read_plan() == [("holding", 10, 3)], timeout=10)
        after = len(gateway_server.requests)
        await eventually(lambda: len(gateway_server.requests) >= after + 5)
        assert set(gateway_server.requests[after:]) == {whole}
        assert running.service.producers[0].status.errors()["illegal_address"] >= 3
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_a_unit_the_gateway_cannot_reach_is_down_while_its_neighbour_stays_ok(gateway_server):
    chiller = [ModbusPoint("plant/chiller-1/supply_temp", 100, scale=0.1, unit="°C")]
    meter = [ModbusPoint("plant/meter-1/power", 100, unit="kW")]
    gateway_server.set("holding", 100, [65], device_id=1)
    gateway_server.set("holding", 100, [120], device_id=2)
    pool = GatewayPool()
    producers = [
        _producer(gateway_server, "modbus.chiller-1", 1, chiller, gateways=pool, retries=1),
        _producer(gateway_server, "modbus.meter-1", 2, meter, gateways=pool, retries=1),
    ]
    running = await start_server(producers)
    try:
        client = await within(5, connect(reactor(), running.port))
        await until_state(client, lambda s: len(s) == 2)
        target_gone = [True]
        gateway_server.refuse = lambda r: 0x0B if target_gone[0] and r[0] == 2 else None
        state = await until_state(client, lambda s: s.get("plant/meter-1/power", {}).get("status") == "down")
        assert point_of(running.service.hub, "plant/chiller-1/supply_temp").status == "ok"
        status = running.service.producers[1].status
        await eventually(lambda: not status.connected)
        assert "cannot reach unit 2" in status.last_error and status.errors()["gateway_target_failed"] >= 2
        assert "unreachable" not in status.errors()

        target_gone[0] = False
        gateway_server.set("holding", 100, [130], device_id=2)
        await until_state(
            client,
            lambda s: s.get("plant/meter-1/power", {}).get("status") == "ok"
            and s.get("plant/meter-1/power", {}).get("value") == 130,
        )
        assert gateway_server.connections == 1  # the neighbour's connection was never dropped
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_each_point_is_read_at_its_own_interval(gateway_server):
    fast = ModbusPoint("plant/ahu-1/supply_temp", 10, scale=0.1, unit="°C", interval=0.05)
    slow = ModbusPoint("plant/ahu-1/run_hours", 11, type="uint32", unit="h", interval=3600)
    gateway_server.set("holding", 10, [185, 0, 4200])
    producer = _producer(gateway_server, "modbus.ahu-1", 1, [fast, slow], gateways=GatewayPool())
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        state = await until_state(client, lambda s: len(s) == 2)
        assert state["plant/ahu-1/run_hours"]["value"] == 4200
        await eventually(lambda: gateway_server.requests.count((1, READ_HOLDING, 10, 1)) >= 10)
        # Next to each other, but not read together: the slow one was read once, the fast one every poll.
        assert gateway_server.requests.count((1, READ_HOLDING, 11, 2)) == 1
        assert set(gateway_server.requests) == {(1, READ_HOLDING, 10, 1), (1, READ_HOLDING, 11, 2)}
        gateway_server.set("holding", 10, [190])
        await until_state(client, lambda s: s.get("plant/ahu-1/supply_temp", {}).get("value") == 19.0)
        assert point_of(running.service.hub, "plant/ahu-1/run_hours").status == "ok"
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_every_refused_read_is_counted_per_source_and_reason_in_metrics(gateway_server):
    from tests.test_metrics_health import http_get, samples

    chiller = [
        ModbusPoint("plant/chiller-1/supply_temp", 100, type="float32"),  # NaN in the device: decode
        ModbusPoint("plant/chiller-1/setpoint", 50),
        ModbusPoint("plant/chiller-1/missing", 53),  # with setpoint: a read refused as an illegal address
    ]
    meter = [ModbusPoint("plant/meter-1/power", 100)]
    gateway_server.set("holding", 100, [0x7FC0, 0x0000], device_id=1)
    busy = Burst(0x06, 3, unit=2)

    def refuse(request: tuple[int, int, int, int]) -> int | None:
        if request[:3] == (1, READ_HOLDING, 50) and request[3] > 1:
            return 0x02
        return busy(request)

    gateway_server.refuse = refuse
    pool = GatewayPool()
    producers = [
        _producer(gateway_server, "modbus.chiller-1", 1, chiller, gateways=pool, rejoin_after=1000),
        _producer(gateway_server, "modbus.meter-1", 2, meter, gateways=pool, retries=5),
    ]
    running = await start_server(producers)
    try:
        await eventually(lambda: all(p.polls >= 3 for p in producers) and busy.left == 0)
        code, headers, body = await http_get(running.port, "/metrics")
        assert code == 200
        found = samples(body)

        def count(producer: str, reason: str) -> float:
            return found.get(("hvacpush_source_errors_total", (("producer", producer), ("reason", reason))), 0.0)

        assert count("modbus.chiller-1", "illegal_address") == 1  # split once, not tried whole again yet
        assert count("modbus.chiller-1", "decode") >= 3  # once per poll
        assert count("modbus.meter-1", "busy") == 3
        assert count("modbus.meter-1", "decode") == count("modbus.chiller-1", "busy") == 0
        assert point_of(running.service.hub, "plant/meter-1/power").status == "ok"
        assert point_of(running.service.hub, "plant/chiller-1/setpoint").status == "ok"
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_plant_file_groups_on_one_gateway_share_its_connection_at_their_own_pace(gateway_server):
    from hvac_push.ops.plant_file import parse_config
    from hvac_push.ops.plant_sources import ConfigReloader

    port = gateway_server.port
    plant = f"""
[modbus.chiller-fast]
host = "127.0.0.1"
port = {port}
unit_id = 1
poll_interval = 0.05
timeout = 0.5

[modbus.chiller-slow]
host = "127.0.0.1"
port = {port}
unit_id = 1
poll_interval = 600
timeout = 0.5

[modbus.meter]
host = "127.0.0.1"
port = {port}
unit_id = 2
poll_interval = 0.05
timeout = 0.5

[units.chiller-1.points.running]
source = "modbus.chiller-fast"
register = 40
bit = 0

[units.chiller-1.points.model]
source = "modbus.chiller-slow"
register = 60
type = "string"
length = 6

[units.meter-1.points.power]
source = "modbus.meter"
register = 100
type = "float64"
unit = "kW"
"""
    gateway_server.set("holding", 40, [1], device_id=1)
    gateway_server.set("holding", 60, encode(ModbusPoint("x/y/z", 60, type="string", length=6), "19XR-3"), device_id=1)
    gateway_server.set("holding", 100, encode(ModbusPoint("x/y/z", 100, type="float64"), 412.5), device_id=2)
    running = await start_server()
    try:
        ConfigReloader(running.service, parse_config(plant))
        client = await within(5, connect(reactor(), running.port))
        state = await until_state(client, lambda s: all(p.get("value") is not None for p in s.values()) and len(s) == 3)
        assert state["plant/chiller-1/running"]["value"] is True
        assert state["plant/chiller-1/model"]["value"] == "19XR-3"
        assert state["plant/meter-1/power"]["value"] == 412.5
        await eventually(lambda: gateway_server.requests.count((1, READ_HOLDING, 40, 1)) >= 10)
        assert gateway_server.requests.count((1, READ_HOLDING, 60, 3)) == 1  # the slow group: once so far
        assert gateway_server.connections == 1
        assert _server_side_connections(port) == 1
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)
    await eventually(lambda: _server_side_connections(port) == 0)
