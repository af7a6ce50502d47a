"""The plant file's Modbus register keys (bit, byte_order, 64-bit types, strings, intervals, gateways):
good maps load into producers, bad ones give one line naming the key."""

from __future__ import annotations

import textwrap

import pytest

from hvac_push.ops.plant_file import ConfigError, PlantConfig, parse_config
from hvac_push.ops.plant_sources import build_producer, producer_specs
from hvac_push.sources.modbus import ModbusProducer
from hvac_push.sources.modbus_codec import ModbusPoint

HEAD = """
[modbus.plc]
host = "127.0.0.1"
port = 15020

[units.chiller-1]
source = "modbus.plc"
"""


def parse(text: str) -> PlantConfig:
    return parse_config(textwrap.dedent(HEAD + text), "plant.toml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse(text)
    return e.value.errors[0]


def test_status_bits_byte_order_64_bit_types_and_strings_reach_the_producer():
    plant = parse(
        """
        [units.chiller-1.points.running]
        register = 40
        bit = 0
        [units.chiller-1.points.alarm_active]
        register = 40
        bit = 15
        [units.chiller-1.points.energy]
        register = 50
        type = "uint64"
        byte_order = "little"
        word_order = "little"
        unit = "Wh"
        [units.chiller-1.points.power]
        register = 60
        type = "float64"
        [units.chiller-1.points.serial]
        register = 70
        type = "string"
        length = 12
        """
    )
    (spec,) = producer_specs(plant).values()
    producer = build_producer(spec)
    assert isinstance(producer, ModbusProducer)
    by_id = {p.point_id: p for p in producer.points}
    assert by_id["plant/chiller-1/running"] == ModbusPoint("plant/chiller-1/running", 40, bit=0)
    assert by_id["plant/chiller-1/alarm_active"].bit == 15
    energy = by_id["plant/chiller-1/energy"]
    assert (energy.type, energy.byte_order, energy.word_order, energy.count, energy.unit) == (
        "uint64", "little", "little", 4, "Wh",
    )
    assert by_id["plant/chiller-1/power"].count == 4
    serial = by_id["plant/chiller-1/serial"]
    assert (serial.type, serial.length, serial.count) == ("string", 12, 6)


P = "plant.toml: units.chiller-1.points.p"


@pytest.mark.parametrize(
    "point, message",
    [
        ("register = 1\nbit = 16", f"{P}.bit: must be between 0 and 15, got 16"),
        ('register = 1\ntype = "uint32"\nbit = 32', f"{P}.bit: must be between 0 and 31, got 32"),
        ('register = 1\ntype = "float32"\nbit = 3', f"{P}.bit: needs an integer type, not float32"),
        ("register = 1\nbit = 3\nscale = 0.1", f"{P}.scale: not used with bit (the value is true/false)"),
        ('register = 1\nbit = "3"', f"{P}.bit: expected an integer"),
        ('register = 1\ntable = "coil"\nbit = 3', f"{P}.bit: not used for a coil (it is read as true/false)"),
        ('register = 1\nbyte_order = "middle"', f"{P}.byte_order: expected one of big, little, got 'middle'"),
        ('register = 1\ntype = "string"', f"{P}.length: required"),
        ('register = 1\ntype = "string"\nlength = 0', f"{P}.length: must be between 1 and 250, got 0"),
        ('register = 1\nlength = 4', f'{P}.length: only for type = "string" (this one is uint16)'),
        ('register = 1\ntype = "string"\nlength = 4\nscale = 2', f"{P}.scale: not used for a string"),
        ('register = 65533\ntype = "float64"', f"{P}.register: a float64 needs 4 registers, 65533 is too near the end"),
        ('register = 1\ntype = "int128"', f"{P}.type: expected one of int16, uint16, int32, uint32, int64, uint64, "
                                          "float32, float64, string, got 'int128'"),
    ],
)
def test_a_bad_register_map_is_one_line_naming_the_key(point, message):
    assert error_of(f"[units.chiller-1.points.p]\n{point}\n") == message


def test_a_modbus_points_interval_is_also_how_often_it_is_read():
    plant = parse(
        """
        [units.chiller-1.points.supply_temp]
        register = 100
        interval = 5
        [units.chiller-1.points.run_hours]
        register = 101
        type = "uint32"
        interval = 300
        [units.chiller-1.points.compressor]
        register = 3
        table = "coil"
        interval = 2
        [units.chiller-1.points.flow]
        register = 120
        """
    )
    by_id = {p.point_id: p for p in plant.points}
    assert by_id["plant/chiller-1/supply_temp"].meta.expected_interval == 5.0  # staleness still uses it
    (spec,) = producer_specs(plant).values()
    producer = build_producer(spec)
    assert isinstance(producer, ModbusProducer)
    intervals = {p.point_id.rsplit("/", 1)[1]: p.interval for p in producer.points}
    assert intervals == {"supply_temp": 5.0, "run_hours": 300.0, "compressor": 2.0, "flow": None}
    # Neighbours with different intervals are not read together (the plan runs from the shortest interval).
    assert producer.read_plan() == [
        ("holding", 120, 1), ("coil", 3, 1), ("holding", 100, 1), ("holding", 101, 2),
    ]


def test_the_commented_gateway_example_is_valid():
    """docs/plant.example.toml ships a gateway with two unit ids commented out; uncommented, it must load."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "docs" / "plant.example.toml"
    text = example.read_text(encoding="utf-8")
    start = text.index("# [modbus.gw-chiller-2]")
    block = text[start:].split("\n\n", 1)[0]
    lines = [line[2:] if line.startswith("# ") else line for line in block.splitlines()]
    assert all(not line.startswith("#") for line in lines), block
    plant = parse_config(text.replace(block, "\n".join(lines)), str(example), str(example.parent))
    specs = producer_specs(plant)
    chiller, meter = build_producer(specs["modbus.gw-chiller-2"]), build_producer(specs["modbus.gw-meter-1"])
    assert isinstance(chiller, ModbusProducer) and isinstance(meter, ModbusProducer)
    assert (chiller.host, chiller.port, chiller.unit_id) == (meter.host, meter.port, 1) and meter.unit_id == 2
    assert chiller.gateways is meter.gateways  # the process's pool: one connection for both
    by_id = {p.point_id: p for p in chiller.points + meter.points}
    assert by_id["plant/chiller-2/tripped"].bit == 5
    assert by_id["plant/chiller-2/model"].length == 16 and by_id["plant/chiller-2/model"].interval == 3600
    energy = by_id["plant/meter-1/energy"]
    assert (energy.type, energy.word_order, energy.byte_order) == ("uint64", "little", "little")
    assert chiller.read_plan() == [("holding", 40, 1), ("holding", 200, 8)]


def test_the_device_family_examples_in_sources_md_load():
    """Each TOML example under "Examples by device family" in docs/sources.md is a valid plant file."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "sources.md").read_text(encoding="utf-8")
    section = doc[doc.index("### Examples by device family") : doc.index("## BACnet/IP")]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    plants = [parse_config(block, "sources.md") for block in blocks]
    chiller = {p.point_id: p.register for p in plants[0].points}
    assert chiller["plant/chiller-3/tripped"] is not None and chiller["plant/chiller-3/tripped"].bit == 5
    meter = {p.point_id: p.register for p in plants[1].points}
    energy = meter["plant/meter-main/energy"]
    assert energy is not None and (energy.type, energy.word_order, energy.byte_order) == ("uint64", "little", "little")
    gateway = plants[2].devices
    assert {(d.host, d.port) for d in gateway} == {("192.168.10.90", 502)} and {d.unit_id for d in gateway} == {1, 2}


def test_retries_reach_the_producer_and_are_bounded():
    plant = parse_config(textwrap.dedent(HEAD.replace("port = 15020", "port = 15020\nretries = 5") + """
        [units.chiller-1.points.p]
        register = 1
        """), "plant.toml")
    (spec,) = producer_specs(plant).values()
    producer = build_producer(spec)
    assert isinstance(producer, ModbusProducer) and producer.retries == 5
    with pytest.raises(ConfigError) as e:
        parse_config(textwrap.dedent(HEAD.replace("port = 15020", "port = 15020\nretries = 11")), "plant.toml")
    assert e.value.errors[0] == "plant.toml: modbus.plc.retries: must be between 0 and 10, got 11"


def test_sources_sharing_a_gateway_use_the_longest_timeout():
    from hvac_push.sources.modbus_gateway import GatewayPool

    pool = GatewayPool()
    first = pool.acquire("127.0.0.1", 1502, 0.5)
    second = pool.acquire("127.0.0.1", 1502, 2.0)
    assert first is second and first.timeout == 2.0 and first.users == 2
    assert pool.acquire("127.0.0.1", 1503, 0.5) is not first
    pool.release(first)
    assert pool.get("127.0.0.1", 1502) is first
    pool.release(first)
    assert pool.get("127.0.0.1", 1502) is None
