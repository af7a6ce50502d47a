"""hvac_push.sources.sparkplug: a Sparkplug B edge node (tests/sparkplug_edge.py, the same protobuf module) births,
sends alias-only data, loses messages, dies and is reborn, through a real mosquitto, to a WebSocket client."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from hvac_push.ops.plant_file import ConfigError, parse_config
from hvac_push.ops.plant_sources import build_producer, producer_specs
from hvac_push.sources import sparkplug_b_pb2 as pb
from hvac_push.sources.mqtt import MqttProducer
from hvac_push.sources.sparkplug import REBIRTH, SparkplugHost, metric_value, rebirth_request
from hvac_push.sources.sparkplug_settings import SparkplugSettings
from hvac_push.testing import connect
from tests.brokers import mosquitto  # noqa: F401 (fixture)
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, until_state, within
from tests.sparkplug_edge import EdgeNode, Metric

ROOT = Path(__file__).resolve().parents[1]


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def test_the_committed_module_is_what_protoc_makes_of_the_proto_file(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "hvac_push/sources/proto"),
         f"--python_out={tmp_path}", str(ROOT / "hvac_push/sources/proto/sparkplug_b.proto")],
        check=True, timeout=60,
    )
    made = (tmp_path / "sparkplug_b_pb2.py").read_text()
    assert made == (ROOT / "hvac_push/sources/sparkplug_b_pb2.py").read_text()


def _metric(datatype: int, **value: Any) -> Any:
    metric = pb.Payload.Metric(datatype=datatype, **value)
    return metric


@pytest.mark.parametrize(
    "metric, value",
    [
        (_metric(pb.Int8, int_value=0xFFFFFFFE), -2),  # two's complement in the unsigned field
        (_metric(pb.Int16, int_value=0xFFFF8000), -32768),
        (_metric(pb.Int32, int_value=5), 5),
        (_metric(pb.Int64, long_value=2**64 - 3), -3),
        (_metric(pb.UInt32, int_value=0xFFFFFFFE), 0xFFFFFFFE),
        (_metric(pb.Float, float_value=21.3), 21.3),  # the float32 noise is rounded off
        (_metric(pb.Double, double_value=21.123456789), 21.123456789),
        (_metric(pb.Boolean, boolean_value=True), True),
        (_metric(pb.String, string_value="auto"), "auto"),
        (_metric(pb.Double, is_null=True), None),
    ],
)
def test_metric_values_decode_as_the_specification_says(metric, value):
    assert metric_value(metric) == value


def test_values_a_point_cannot_carry_are_refused():
    with pytest.raises(ValueError, match="outside the exact JSON range"):
        metric_value(_metric(pb.UInt64, long_value=2**60))
    with pytest.raises(ValueError, match="bytes value cannot be a point"):
        metric_value(_metric(pb.Bytes, bytes_value=b"x"))


def _message(seq: int | None, *metrics: tuple[str | None, int | None, float]) -> bytes:
    payload = pb.Payload(timestamp=1764000000000)
    if seq is not None:
        payload.seq = seq
    for name, alias, value in metrics:
        m = payload.metrics.add()
        if name is not None:
            m.name = name
        if alias is not None:
            m.alias = alias
        m.datatype = pb.Double
        m.double_value = value
    return payload.SerializeToString()


def test_the_host_asks_for_a_rebirth_on_a_gap_an_unknown_alias_or_data_before_birth():
    now = [0.0]
    host = SparkplugHost(SparkplugSettings(site="plant"), clock=lambda: now[0])
    early = host.handle("spBv1.0/g/NDATA/n1", _message(4, (None, 1, 1.0)))
    assert [r for r, _ in early.problems] == ["sparkplug_not_born"]
    assert early.commands == [(rebirth_request("g", "n1", 0)[0], early.commands[0][1])]
    ask = pb.Payload.FromString(early.commands[0][1])
    assert [(m.name, m.boolean_value) for m in ask.metrics] == [(REBIRTH, True)]

    born = pb.Payload.FromString(_message(0, ("Inputs/Temp", 1, 20.0)))
    born.metrics.add(name="bdSeq", datatype=pb.Int64, long_value=3)
    birth = host.handle("spBv1.0/g/NBIRTH/n1", born.SerializeToString())
    assert birth.declare == [("plant/n1/Inputs.Temp", "")] and birth.samples[0].value == 20.0
    assert birth.samples[0].ts == 1764000000.0
    data = host.handle("spBv1.0/g/NDATA/n1", _message(1, (None, 1, 21.0)))
    assert [s.value for s in data.samples] == [21.0] and not data.problems
    late = pb.Payload.FromString(_message(2, (None, 1, 5.0)))
    late.metrics[0].is_historical = True
    assert host.handle("spBv1.0/g/NDATA/n1", late.SerializeToString()).samples == []  # history is not the present

    gap = host.handle("spBv1.0/g/NDATA/n1", _message(6, (None, 1, 22.0)))
    assert [r for r, _ in gap.problems] == ["sparkplug_seq_gap"]
    assert [s.value for s in gap.samples] == [22.0]  # the value itself is good
    assert len(gap.commands) == 1
    unknown = host.handle("spBv1.0/g/NDATA/n1", _message(7, (None, 9, 1.0)))
    assert [r for r, _ in unknown.problems] == ["sparkplug_unknown_metric"]
    assert unknown.commands == []  # asked 0 s ago: not again within the hold-off
    now[0] = 5.0
    assert len(host.handle("spBv1.0/g/NDATA/n1", _message(8, (None, 9, 1.0))).commands) == 1

    stale = pb.Payload()
    stale.metrics.add(name="bdSeq", datatype=pb.Int64, long_value=7)
    assert host.handle("spBv1.0/g/NDEATH/n1", stale.SerializeToString()).down == []  # an older session's will
    stale.metrics[0].long_value = 3
    assert host.handle("spBv1.0/g/NDEATH/n1", stale.SerializeToString()).down == ["plant/n1/Inputs.Temp"]
    assert [r for r, _ in host.handle("spBv1.0/g/NDATA/n1", b"\xff\xff").problems] == ["malformed"]
    assert host.handle("spBv1.0/g/NCMD/n1", b"anything").problems == []  # commands are not ours to read


def test_the_plant_file_turns_sparkplug_on_with_one_line_errors():
    base = '[mqtt.spb]\nhost = "127.0.0.1"\ntopic_template = ""\n'
    config = parse_config(base + '[mqtt.spb.sparkplug]\ngroup = "plant-a"\nsite = "bldg-a"\n', "plant.toml")
    assert config.brokers[0].sparkplug == SparkplugSettings("plant-a", "bldg-a")
    with pytest.raises(ConfigError) as e:
        parse_config(base + '[mqtt.spb.sparkplug]\ngroup = "a/b"\n', "plant.toml")
    assert e.value.errors[0] == ('plant.toml: mqtt.spb.sparkplug.group: must be one group id '
                                 '(no \'/\', \'+\' or \'#\'), or "+" for every group')


# -- end to end ----------------------------------------------------------------------------


def _edge(port: int) -> EdgeNode:
    return EdgeNode(
        port, "plant-a", "edge-1",
        node_metrics=[Metric("Uptime", 1, pb.Int64, 10, "s")],
        devices={
            "ahu-1": [
                Metric("Supply Temp", 10, pb.Float, 14.5, "°C"),
                Metric("Fan/Running", 11, pb.Boolean, True),
                Metric("Fan/Speed", 12, pb.Int16, 62, "%"),
            ],
            "chiller-1": [Metric("CHW Supply", 20, pb.Double, 6.8, "°C")],
        },
    )


def _all(expected: dict[str, tuple[str, Any]]) -> Callable[[dict[str, Any]], bool]:
    def check(state: dict[str, Any]) -> bool:
        return all(
            pid in state and state[pid]["status"] == status and (value is None or state[pid]["value"] == value)
            for pid, (status, value) in expected.items()
        )

    return check


AHU = ["plant-a/edge-1.ahu-1/Supply_Temp", "plant-a/edge-1.ahu-1/Fan.Running", "plant-a/edge-1.ahu-1/Fan.Speed"]
CHILLER = "plant-a/edge-1.chiller-1/CHW_Supply"
UPTIME = "plant-a/edge-1/Uptime"


@pytest_twisted.ensureDeferred
async def test_an_edge_node_births_sends_aliases_dies_and_is_reborn(mosquitto):
    text = textwrap.dedent(f"""
        [mqtt.spb]
        host = "127.0.0.1"
        port = {mosquitto.port}
        topic_template = ""
        reconnect_min = 0.05
        reconnect_max = 0.2
        [mqtt.spb.sparkplug]
    """)
    producer = build_producer(producer_specs(parse_config(text, "plant.toml"))["mqtt.spb"])
    assert isinstance(producer, MqttProducer)
    running = await start_server([producer])
    edge = _edge(mosquitto.port)
    try:
        client = await within(5, connect(reactor(), running.port))
        await eventually(lambda: producer.connected, timeout=5)

        # Birth: every metric becomes a point, with its unit and value.
        await deferToThread(edge.start)
        state = await until_state(client, _all({
            AHU[0]: ("ok", 14.5), AHU[1]: ("ok", True), AHU[2]: ("ok", 62), CHILLER: ("ok", 6.8), UPTIME: ("ok", 10),
        }), seconds=20)
        assert state[AHU[0]]["unit"] == "°C" and state[UPTIME]["unit"] == "s"
        assert running.service.hub.meta[AHU[1]].name == "Fan/Running"

        # Data by alias alone.
        await deferToThread(edge.data, "ahu-1", {10: 15.25, 12: 70})
        await deferToThread(edge.data, None, {1: 20})
        await until_state(client, _all({AHU[0]: ("ok", 15.25), AHU[2]: ("ok", 70), UPTIME: ("ok", 20)}), seconds=20)

        # A device dies: its points go down (last values kept); the rest of the node stays ok.
        await deferToThread(edge.device_death, "chiller-1")
        state = await until_state(client, _all({CHILLER: ("down", 6.8)}), seconds=20)
        hub = running.service.hub
        assert all(getattr(hub.get(pid), "status", None) == "ok" for pid in (*AHU, UPTIME))

        # Lost messages: the host sees the gap, asks for a rebirth, and the node births again.
        await deferToThread(edge.skip, 3)
        await deferToThread(edge.data, "ahu-1", {10: 16.0})
        await eventually(lambda: edge.rebirth_requests == 1 and edge.births == 2, timeout=20)
        await until_state(client, _all({CHILLER: ("ok", 6.8), AHU[0]: ("ok", 16.0)}), seconds=20)
        errors = running.service.producers[0].status.errors()
        assert errors.get("sparkplug_seq_gap") == 1

        # The node is cut off: the broker publishes its will (NDEATH), and every point of it goes down.
        await deferToThread(edge.kill)
        await until_state(client, _all({pid: ("down", None) for pid in (*AHU, CHILLER, UPTIME)}), seconds=20)

        # A new session births again (bdSeq + 1): everything is ok again.
        await deferToThread(edge.start)
        await until_state(client, _all({pid: ("ok", None) for pid in (*AHU, CHILLER, UPTIME)}), seconds=20)
        assert producer.unread.get("sparkplug_unknown_metric", 0) == 0
        client.sendClose()
        await client.closed
    finally:
        await deferToThread(edge.stop)
        await stop_server(running)
