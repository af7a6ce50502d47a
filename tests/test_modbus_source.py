"""hvac_push.sources.modbus: the Modbus TCP source against a real pymodbus server, end to end to a WebSocket
client."""

from __future__ import annotations

from typing import Any, Sequence

import pytest
import pytest_twisted

from hvac_push.sources.modbus import ModbusPoint, ModbusProducer, decode, encode, plan_reads
from hvac_push.testing import connect
from tests.brokers import ModbusServer, modbus_server  # noqa: F401 (fixture)
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, until_state, within
from tests.wsprobe import closed_port  # noqa: F401 (fixture)


def reactor():
    from twisted.internet import reactor

    return reactor


# -- decoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, order, words, value",
    [
        ("int16", "big", [0xFFFE], -2),
        ("uint16", "big", [0xFFFE], 65534),
        ("int32", "big", [0xFFFF, 0xFFFD], -3),
        ("int32", "little", [0xFFFD, 0xFFFF], -3),
        ("uint32", "big", [0x0001, 0x0002], 65538),
        ("uint32", "little", [0x0002, 0x0001], 65538),
        ("float32", "big", [0x40E6, 0x6666], 7.2),
        ("float32", "little", [0x6666, 0x40E6], 7.2),
    ],
)
def test_decode_types_and_word_orders(kind, order, words, value):
    point = ModbusPoint("p/u/x", 0, "holding", kind, order)
    assert decode(point, words) == value
    assert encode(point, value) == words


def test_scale_and_offset_give_clean_floats():
    point = ModbusPoint("p/u/x", 0, "input", "int16", scale=0.1, offset=-40.0)
    assert decode(point, [615]) == 21.5
    assert encode(point, 21.5) == [615]
    assert decode(ModbusPoint("p/u/c", 3, "coil"), [True]) is True


def test_non_finite_floats_are_refused():
    with pytest.raises(ValueError):
        decode(ModbusPoint("p/u/x", 0, type="float32"), [0x7FC0, 0x0000])  # NaN


def test_nearby_points_are_read_together_within_the_limits():
    points = [
        ModbusPoint("p/u/a", 100, type="float32"),
        ModbusPoint("p/u/b", 102, type="int16"),
        ModbusPoint("p/u/c", 109),  # 6 registers after b: merged
        ModbusPoint("p/u/d", 300),  # far: its own read
        ModbusPoint("p/u/e", 5, "coil"),
        ModbusPoint("p/u/f", 0, "input"),
    ]
    blocks = [(b.table, b.address, b.count, [p.point_id for p in b.points]) for b in plan_reads(points)]
    assert blocks == [
        ("holding", 100, 10, ["p/u/a", "p/u/b", "p/u/c"]),
        ("holding", 300, 1, ["p/u/d"]),
        ("input", 0, 1, ["p/u/f"]),
        ("coil", 5, 1, ["p/u/e"]),
    ]
    wide = [ModbusPoint(f"p/u/r{i}", i * 8) for i in range(40)]  # 313 registers apart at most
    assert all(b.count <= 125 for b in plan_reads(wide))


def test_bad_register_maps_are_refused():
    with pytest.raises(ValueError):
        ModbusPoint("p/u/x", 65535, type="uint32")
    with pytest.raises(ValueError):
        ModbusPoint("p/u/x", 0, table="register")
    with pytest.raises(ValueError):
        ModbusPoint("p/u/x", 0, scale=0)


# -- against a real device -----------------------------------------------------


def _producer(server: ModbusServer, points: Sequence[ModbusPoint], **kw: Any) -> ModbusProducer:
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("timeout", 0.5)
    kw.setdefault("initial_backoff", 0.05)
    kw.setdefault("max_backoff", 0.2)
    return ModbusProducer("modbus.test", "127.0.0.1", points, port=server.port, unit_id=1, **kw)



@pytest_twisted.ensureDeferred
async def test_values_written_to_the_device_reach_a_websocket_client(modbus_server):
    supply = ModbusPoint("plant/chiller-1/supply_temp", 100, "holding", "float32", unit="°C")
    ret = ModbusPoint("plant/chiller-1/return_temp", 10, "input", "int16", scale=0.1, unit="°C")
    comp = ModbusPoint("plant/chiller-1/compressor", 3, "coil")
    flow = ModbusPoint("plant/chiller-1/flow", 20, "holding", "uint32", "little", unit="l/h")
    modbus_server.set("holding", 100, encode(supply, 6.8))
    modbus_server.set("input", 10, encode(ret, 12.3))
    modbus_server.set("coil", 3, [True])
    modbus_server.set("holding", 20, encode(flow, 70_000))
    running = await start_server([_producer(modbus_server, [supply, ret, comp, flow])])
    try:
        client = await within(5, connect(reactor(), running.port))
        state = await until_state(client, lambda s: len(s) == 4)
        assert state["plant/chiller-1/supply_temp"]["value"] == 6.8
        assert state["plant/chiller-1/supply_temp"]["unit"] == "°C"
        assert state["plant/chiller-1/return_temp"]["value"] == 12.3
        assert state["plant/chiller-1/compressor"]["value"] is True
        assert state["plant/chiller-1/flow"]["value"] == 70_000
        assert all(p["status"] == "ok" for p in state.values())

        modbus_server.set("holding", 100, encode(supply, 7.4))
        state = await until_state(client, lambda s: s["plant/chiller-1/supply_temp"]["value"] == 7.4)
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_device_down_is_fault_and_back_up_is_ok_with_fresh_values(modbus_server):
    point = ModbusPoint("plant/ahu-1/fan_speed", 7, unit="%")
    modbus_server.set("holding", 7, [55])
    producer = _producer(modbus_server, [point])
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        await until_state(client, lambda s: s.get("plant/ahu-1/fan_speed", {}).get("value") == 55)

        modbus_server.stop()
        # "down": the source cannot reach the device (a bad reading alone would be "fault").
        state = await until_state(client, lambda s: s["plant/ahu-1/fan_speed"]["status"] == "down")
        assert state["plant/ahu-1/fan_speed"]["value"] == 55  # the last value stays visible
        assert producer.failures >= 1 and not producer.connected
        status = running.service.producers[0].status
        await eventually(lambda: not status.connected)
        assert f"127.0.0.1:{modbus_server.port}" in status.last_error and status.errors()["unreachable"] >= 1

        modbus_server.start()
        modbus_server.set("holding", 7, [61])
        state = await until_state(
            client,
            lambda s: s["plant/ahu-1/fan_speed"]["status"] == "ok" and s["plant/ahu-1/fan_speed"]["value"] == 61,
        )
        assert running.service.producers[0].status.restarts == 0  # handled inside run, no crash
        assert client.state == client.STATE_OPEN
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_an_exception_response_faults_only_that_point(modbus_server):
    good = ModbusPoint("plant/crac-1/setpoint", 195, scale=0.1, unit="°C")
    bad = ModbusPoint("plant/crac-1/missing", 199, type="uint32")  # 199..200: past the datastore
    modbus_server.set("holding", 195, [190])
    producer = _producer(modbus_server, [good, bad])
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        state = await until_state(client, lambda s: "plant/crac-1/setpoint" in s)
        assert state["plant/crac-1/setpoint"]["value"] == 19.0
        assert "plant/crac-1/missing" not in state
        modbus_server.set("holding", 195, [200])
        await until_state(client, lambda s: s["plant/crac-1/setpoint"]["value"] == 20.0)
        assert producer.connected and producer.polls >= 2
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_an_unreachable_device_never_blocks_the_reactor(closed_port):
    server = ModbusServer(port=closed_port)  # never started: connection refused
    producer = _producer(server, [ModbusPoint("plant/u/p", 0)])
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        snapshot = await within(5, client.next("snapshot"))
        assert snapshot["points"] == {}
        await eventually(lambda: producer.failures >= 2, timeout=5)
        assert not producer.connected
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


# -- status bits, byte order, 64-bit types, strings ------------------------------


@pytest.mark.parametrize(
    "point, words, value",
    [
        (ModbusPoint("p/u/x", 0, bit=0), [0x0001], True),
        (ModbusPoint("p/u/x", 0, bit=1), [0x0001], False),
        (ModbusPoint("p/u/x", 0, bit=15), [0x8000], True),
        (ModbusPoint("p/u/x", 0, type="uint32", bit=16), [0x0001, 0x0000], True),
        (ModbusPoint("p/u/x", 0, type="int16", byte_order="little"), [0xFEFF], -2),
        (ModbusPoint("p/u/x", 0, type="float32", byte_order="little"), [0xE640, 0x6666], 7.2),
        (ModbusPoint("p/u/x", 0, type="float32", word_order="little", byte_order="little"), [0x6666, 0xE640], 7.2),
        (ModbusPoint("p/u/x", 0, type="int64"), [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2),
        (ModbusPoint("p/u/x", 0, type="uint64"), [0x0001, 0x0000, 0x0000, 0x0000], 2**48),
        (ModbusPoint("p/u/x", 0, type="uint64", word_order="little"), [0x0000, 0x0000, 0x0000, 0x0001], 2**48),
        (ModbusPoint("p/u/x", 0, type="float64"), [0x4046, 0xD47A, 0xE147, 0xAE14], 45.66),
        (ModbusPoint("p/u/x", 0, type="float64", word_order="little", byte_order="little"),
         [0x14AE, 0x47E1, 0x7AD4, 0x4640], 45.66),
        (ModbusPoint("p/u/x", 0, type="string", length=5), [0x4348, 0x2D31, 0x4100], "CH-1A"),
        (ModbusPoint("p/u/x", 0, type="string", length=6, byte_order="little"), [0x4843, 0x312D, 0x2041], "CH-1A"),
    ],
)
def test_decode_bits_byte_orders_64_bit_types_and_strings(point, words, value):
    assert point.count == len(words)
    assert decode(point, words) == value
    if point.bit is None:
        assert decode(point, encode(point, value)) == value


def test_a_set_bit_is_read_whatever_the_other_bits_say():
    running = ModbusPoint("p/u/running", 0, bit=3)
    assert decode(running, [0b1111_1111_1111_0111]) is False
    assert decode(running, [0b0000_0000_0000_1000]) is True
    assert encode(running, True) == [0b1000]


def test_bad_new_register_maps_are_refused():
    with pytest.raises(ValueError, match="bit must be 0..15"):
        ModbusPoint("p/u/x", 0, bit=16)
    with pytest.raises(ValueError, match="bit needs an integer type"):
        ModbusPoint("p/u/x", 0, type="float32", bit=1)
    with pytest.raises(ValueError, match="length must be"):
        ModbusPoint("p/u/x", 0, type="string")
    with pytest.raises(ValueError, match="byte_order"):
        ModbusPoint("p/u/x", 0, byte_order="middle")
    with pytest.raises(ValueError, match="out of range"):
        ModbusPoint("p/u/x", 65533, type="float64")
    with pytest.raises(ValueError):
        decode(ModbusPoint("p/u/x", 0, type="float64"), [0x7FF8, 0, 0, 0])  # NaN


@pytest_twisted.ensureDeferred
async def test_a_status_word_a_float64_a_byte_swapped_uint64_and_a_string_reach_a_websocket_client(modbus_server):
    running = ModbusPoint("plant/chiller-1/running", 40, bit=0)
    tripped = ModbusPoint("plant/chiller-1/tripped", 40, bit=5)
    power = ModbusPoint("plant/meter-1/power", 60, type="float64", unit="kW")
    energy = ModbusPoint("plant/meter-1/energy", 50, type="uint64", byte_order="little", word_order="little", unit="Wh")
    model = ModbusPoint("plant/chiller-1/model", 70, type="string", length=10)
    modbus_server.set("holding", 40, [0b0000_0000_0010_0001])
    modbus_server.set("holding", 60, encode(power, 123.456789012))
    modbus_server.set("holding", 50, encode(energy, 5_000_000_000))
    modbus_server.set("holding", 70, encode(model, "30XA-1002"))
    running_service = await start_server([_producer(modbus_server, [running, tripped, power, energy, model])])
    try:
        client = await within(5, connect(reactor(), running_service.port))
        state = await until_state(client, lambda s: len(s) == 5)
        assert state["plant/chiller-1/running"]["value"] is True
        assert state["plant/chiller-1/tripped"]["value"] is True
        assert state["plant/meter-1/power"]["value"] == 123.456789012
        assert state["plant/meter-1/energy"]["value"] == 5_000_000_000
        assert state["plant/chiller-1/model"]["value"] == "30XA-1002"
        modbus_server.set("holding", 40, [0b0000_0000_0000_0001])  # the trip bit clears, running stays
        state = await until_state(client, lambda s: s["plant/chiller-1/tripped"]["value"] is False)
        assert state["plant/chiller-1/running"]["value"] is True
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running_service)
