"""Collector liveness: a retained online state and an MQTT last will; edges mark a lost collector's points down.

A collector killed hard is in tests/test_cluster_nats.py (twistd nodes); here
collectors stop cleanly (their goodbye is the same offline state as their will).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted

from hvac_push.core.points import Sample
from hvac_push.ops.cluster import MqttBridge, parse_broker_url, subscriber
from hvac_push.sources.common import PointStates
from hvac_push.sources.mqtt_liveness import NodeLiveness
from hvac_push.testing import connect
from tests.brokers import Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.conftest import RunningServer, start_server, stop_server
from tests.helpers import eventually, until_state, within

POINT = "plant/ahu-3/supply_temp"


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def test_a_url_names_the_collector_node_and_its_keepalive() -> None:
    link = parse_broker_url("mqtt://127.0.0.1:1884/hvac?node=collector-a&keepalive=5&qos=0")
    assert (link.node, link.keepalive, link.qos) == ("collector-a", 5, 0)
    assert subscriber(link).qos == 0 and parse_broker_url("mqtt://h").qos == 1
    assert parse_broker_url("mqtt://127.0.0.1/hvac").node  # the host name by default
    for bad in ("mqtt://h?node=a/b", "mqtt://h?keepalive=1", "mqtt://h?keepalive=x", "mqtt://h?qos=2"):
        with pytest.raises(ValueError):
            parse_broker_url(bad)


def test_an_offline_node_makes_its_points_down_whatever_order_messages_come_in() -> None:
    liveness = NodeLiveness("hvac")
    states = PointStates()
    handed: list[Sample] = []
    assert liveness.node_of("hvac/_nodes/c1") == "c1" and liveness.node_of("hvac/plant/_nodes/c1") is None
    liveness.update("c1", b'{"online": false}', states, handed.extend)
    assert liveness.status_of(POINT, "c1", "ok") == "down"  # the retained will came first
    states.remember([Sample(POINT, 1.0, "", 1.0, "down"), Sample("plant/ahu-3/fan", 2.0, "", 1.0, "fault")])
    liveness.status_of("plant/ahu-3/fan", "c1", "fault")
    liveness.update("c1", b'{"online": true}', states, handed.extend)
    assert {(s.point_id, s.status) for s in handed} == {(POINT, "ok")}  # the fault stays a fault
    assert liveness.status_of("plant/other/x", None, "ok") == "ok"  # no node: nothing to say
    liveness.update("c1", b"not json", states, handed.extend)  # ignored
    assert liveness.down_points() == set()


async def _collector(broker: Mosquitto, node: str) -> tuple[RunningServer, MqttBridge]:
    running = await start_server()
    link = parse_broker_url(f"mqtt://127.0.0.1:{broker.port}/hvac?node={node}")
    bridge = MqttBridge(running.hub, reactor(), link, reconnect_min=0.05, reconnect_max=0.3)
    bridge.setServiceParent(running.service)
    return running, bridge


async def _edge(broker: Mosquitto) -> RunningServer:
    source = subscriber(parse_broker_url(f"mqtt://127.0.0.1:{broker.port}/hvac"), name="edge")
    source.reconnect_min, source.reconnect_max = 0.05, 0.3
    return await start_server([source])


def _is(status: str, value: float) -> Any:
    def check(state: dict[str, Any]) -> bool:
        point = state.get(POINT)
        return point is not None and (point["status"], point["value"]) == (status, value)

    return check


@pytest_twisted.ensureDeferred
async def test_a_stopped_collector_is_down_at_the_edges_and_ok_again_when_it_returns(mosquitto: Mosquitto) -> None:
    collector, bridge = await _collector(mosquitto, "c1")
    edge = await _edge(mosquitto)
    late: RunningServer | None = None
    try:
        client = await within(5, connect(reactor(), edge.port))
        await eventually(lambda: bridge.connected, 10)
        collector.hub.publish(Sample(POINT, 13.5, "°C", time.time()))
        await until_state(client, _is("ok", 13.5))
        await stop_server(collector)  # the broker stays up: the offline state tells
        await until_state(client, _is("down", 13.5), seconds=5)

        # An edge that starts now sees the last value, down, from the retained messages.
        late = await _edge(mosquitto)
        late_client = await within(5, connect(reactor(), late.port))
        await until_state(late_client, _is("down", 13.5))

        collector, bridge = await _collector(mosquitto, "c1")  # back, with a newer value
        collector.hub.publish(Sample(POINT, 14.0, "°C", time.time()))
        await until_state(client, _is("ok", 14.0))
        await until_state(late_client, _is("ok", 14.0))
        for c in (client, late_client):
            c.sendClose()
            await within(5, c.closed)
    finally:
        await stop_server(edge)
        if late is not None:
            await stop_server(late)
        if collector.service.running:
            await stop_server(collector)


def test_payloads_name_their_collector() -> None:
    from hvac_push.sources.mqtt import BadPayload, parse_message

    assert parse_message(b'{"value": 1, "node": "c-1"}').node == "c-1"
    with pytest.raises(BadPayload):
        parse_message(b'{"value": 1, "node": "a/b"}')


def test_metadata_and_alarm_limits_round_trip_and_bad_ones_are_refused() -> None:
    from hvac_push.core.points import AlarmLimits, PointMeta
    from hvac_push.sources.mqtt_meta import MetaChannel, meta_payload, parse_meta

    limits = AlarmLimits(high=28.0, low=12.0, deadband=0.5, delay=10.0, severity="critical", latch=True)
    meta = parse_meta(meta_payload(PointMeta("Supply air", 2.0, limits), "°C"))
    assert (meta.name, meta.interval, meta.unit, meta.limits) == ("Supply air", 2.0, "°C", limits)
    for bad in (b"[]", b'{"limits": {"high": "x"}}', b'{"limits": {"colour": 1}}', b'{"interval": -1}',
                b'{"limits": {"severity": "apocalyptic"}}'):
        with pytest.raises(ValueError):
            parse_meta(bad)
    channel = MetaChannel("hvac")
    assert channel.point_of("hvac/_meta/plant/ahu-1/t") == "plant/ahu-1/t"
    assert channel.point_of("hvac/plant/ahu-1/t") is None and channel.point_of("hvac/_meta/a/b") is None


@pytest_twisted.ensureDeferred
async def test_alarm_limits_travel_and_both_edges_raise_the_same_alarm(mosquitto: Mosquitto) -> None:
    from hvac_push.core.points import AlarmLimits, PointMeta
    from hvac_push.ops.cluster import install_links

    collector, bridge = await _collector(mosquitto, "c1")
    edges = []
    try:
        for _ in range(2):
            edge = await start_server()
            link = parse_broker_url(f"mqtt://127.0.0.1:{mosquitto.port}/hvac")
            install_links(edge.service, reactor(), subscribe=[link])
            edges.append(edge)
        limits = AlarmLimits(high=20.0, severity="critical")
        collector.hub.configure(POINT, PointMeta("Supply air", 5.0, limits))
        await eventually(lambda: bridge.connected, 10)
        collector.hub.publish(Sample(POINT, 18.0, "°C", time.time()))
        for edge in edges:
            await eventually(lambda: (edge.hub.meta.get(POINT) or PointMeta()).limits == limits, 10)
            assert edge.hub.meta[POINT].name == "Supply air" and edge.hub.meta[POINT].expected_interval == 5.0
        collector.hub.publish(Sample(POINT, 23.0, "°C", time.time()))  # above the collector's limit
        for edge in (collector, *edges):
            await eventually(lambda: f"{POINT}:high" in edge.service.alarms.alarms, 10)
            assert edge.service.alarms.alarms[f"{POINT}:high"].severity == "critical"
        # A limit changed on the collector follows to the edges.
        collector.hub.configure(POINT, PointMeta("Supply air", 5.0, AlarmLimits(high=30.0)))
        collector.hub.publish(Sample(POINT, 23.5, "°C", time.time()))
        for edge in edges:
            await eventually(lambda: (edge.hub.meta.get(POINT) or PointMeta()).limits == AlarmLimits(high=30.0), 10)
    finally:
        for edge in edges:
            await stop_server(edge)
        await stop_server(collector)


@pytest_twisted.ensureDeferred
async def test_an_ack_on_one_edge_is_applied_on_the_collector_and_the_other_edge(mosquitto: Mosquitto) -> None:
    from hvac_push.core.points import AlarmLimits, PointMeta
    from hvac_push.ops.cluster import install_links
    from hvac_push.ops.cluster_acks import AckRelay

    link = parse_broker_url(f"mqtt://127.0.0.1:{mosquitto.port}/hvac?node=c1")
    nodes = []
    try:
        collector = await start_server()
        install_links(collector.service, reactor(), publish=[link])
        nodes.append(collector)
        for _ in range(2):
            edge = await start_server()
            install_links(edge.service, reactor(), subscribe=[link])
            nodes.append(edge)
        relays = [n.service.getServiceNamed("mqtt-acks") for n in nodes]
        assert all(isinstance(r, AckRelay) for r in relays)
        await eventually(lambda: all(r.connected for r in relays), 10)
        collector.hub.configure(POINT, PointMeta("Supply air", 5.0, AlarmLimits(high=20.0)))
        collector.hub.publish(Sample(POINT, 23.0, "°C", time.time()))
        alarm_id = f"{POINT}:high"
        for node in nodes:
            await eventually(lambda: alarm_id in node.service.alarms.alarms, 10)
        nodes[1].service.alarms.ack(alarm_id, by="alice", comment="on it")
        for node in nodes:
            await eventually(lambda: node.service.alarms.alarms[alarm_id].state == "acknowledged", 10)
            assert node.service.alarms.alarms[alarm_id].by == "alice"
        nodes[2].service.alarms.shelve(alarm_id, 15, by="bob")
        for node in nodes:
            await eventually(lambda: node.service.alarms.alarms[alarm_id].state == "shelved", 10)
        assert relays[1].sent == 1 and relays[2].sent == 1  # applied actions are not sent back
    finally:
        for node in nodes:
            await stop_server(node)
