"""Several broker addresses (the nodes of a clustered broker): parsing, redaction, and failover without flicker.

The three-node NATS cluster test is in tests/test_cluster_nats.py; here two
mosquitto brokers stand in for two nodes (the collector fails over too, and
sends its whole state again to the node it reaches).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from hvac_push.core.points import Sample
from hvac_push.ops.cluster import MqttBridge, mqtt_fed, parse_broker_url, subscriber
from hvac_push.ops.plant_file import ConfigError, load_config
from hvac_push.sources.mqtt_client import Failover, MqttBroker, parse_addresses, redact_url
from hvac_push.testing import connect
from tests.brokers import Mosquitto
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, until_state, within


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def test_a_url_lists_the_nodes_of_a_cluster_in_order():
    link = parse_broker_url("mqtt://edge:s3cret@10.0.0.1:1884,10.0.0.2,[::1]:1999/site-a")
    broker = link.broker
    assert broker.addresses == (("10.0.0.1", 1884), ("10.0.0.2", 1883), ("::1", 1999))
    assert (broker.username, broker.password, link.prefix) == ("edge", "s3cret", "site-a")
    assert link.describe() == "mqtt://edge@10.0.0.1:1884,10.0.0.2:1883,[::1]:1999/site-a"
    assert "s3cret" not in link.describe() and "s3cret" not in repr(broker)
    assert parse_broker_url("mqtts://a,b:9000").broker.addresses == (("a", 8883), ("b", 9000))
    assert parse_broker_url("mqtt://one").broker.fallbacks == ()


@pytest.mark.parametrize("bad, why", [
    ("mqtt://a:1883,,b", "empty host"),
    ("mqtt://a:1883,b:0", "bad port"),
    ("mqtt://a:1883,b:x", "bad port"),
    ("mqtt://a:1883,a", "listed twice"),
    ("mqtt://u:pw@a,[::1/x", "bad address"),
])
def test_bad_node_lists_are_refused_with_the_password_hidden(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        parse_broker_url(bad)
    assert "pw" not in str(caught.value).replace("password", "")


def test_redaction_hides_the_password_of_a_multi_node_url():
    assert redact_url("mqtt://u:p@ss@h1:1883,h2:1883/x") == "mqtt://u:***@h1:1883,h2:1883/x"
    assert parse_addresses("h1, h2:2", 1883) == (("h1", 1883), ("h2", 2))


def test_failover_moves_to_the_next_node_in_turn():
    class Client:
        _host, _port = "a", 1

    failover = Failover(MqttBroker("a", 1, fallbacks=(("b", 2), ("c", 3))))
    client: Any = Client()
    seen = []
    for _ in range(4):
        failover.lost(client)
        seen.append((client._host, client._port))
    assert seen == [("b", 2), ("c", 3), ("a", 1), ("b", 2)]
    assert failover.current == ("b", 2) and failover.moves == 4
    single = Failover(MqttBroker("a", 1))
    single.lost(client)
    assert single.current == ("a", 1) and (client._host, client._port) == ("b", 2)


def test_a_plant_file_mqtt_source_takes_several_hosts(tmp_path: Path) -> None:
    path = tmp_path / "plant.toml"
    path.write_text('[mqtt.bms]\nhost = "10.0.0.1,10.0.0.2:1884"\nport = 1885\n')
    broker = load_config(str(path)).brokers[0].broker
    assert broker.addresses == (("10.0.0.1", 1885), ("10.0.0.2", 1884))
    path.write_text('[mqtt.bms]\nhost = "10.0.0.1,10.0.0.1"\n')
    with pytest.raises(ConfigError, match="mqtt.bms.host: 10.0.0.1:1883 is listed twice"):
        load_config(str(path))


@pytest_twisted.ensureDeferred
async def test_when_a_node_dies_both_sides_fail_over_and_the_points_stay_ok(tmp_path: Path) -> None:
    nodes = [Mosquitto(tmp_path), Mosquitto(tmp_path)]
    for node in nodes:
        node.start()
    url = parse_broker_url(f"mqtt://127.0.0.1:{nodes[0].port},127.0.0.1:{nodes[1].port}/hvac")
    collector = await start_server()
    bridge = MqttBridge(collector.hub, reactor(), url, exclude=mqtt_fed(collector.service),
                        reconnect_min=0.1, reconnect_max=0.5)
    bridge.setServiceParent(collector.service)
    source = subscriber(url, name="edge")
    source.reconnect_min, source.reconnect_max, source.failover_grace = 0.1, 0.5, 5.0
    edge = await start_server([source])
    seen: list[str] = []
    try:
        client = await within(5, connect(reactor(), edge.port))
        await eventually(lambda: bridge.connected and source.connected, 10)
        collector.hub.publish(Sample("plant/ahu-1/supply_temp", 14.0, "°C", time.time()))
        await until_state(client, lambda s: s.get("plant/ahu-1/supply_temp", {}).get("value") == 14.0)

        def spy(state: dict[str, Any]) -> bool:
            point = state.get("plant/ahu-1/supply_temp")
            if point is not None:
                seen.append(point["status"])
            return point is not None and point["value"] == 15.0

        nodes[0].kill()  # both were on the first node
        await eventually(lambda: bridge.connected and source.connected, 10)
        collector.hub.publish(Sample("plant/ahu-1/supply_temp", 15.0, "°C", time.time()))
        await until_state(client, spy, seconds=10)
        assert set(seen) == {"ok"}, seen  # never fault, never down: the failover took less than the grace
        assert bridge.connects == 2 and source.connects == 2
        client.sendClose()
        await within(5, client.closed)
    finally:
        await stop_server(edge)
        await stop_server(collector)
        for node in nodes:
            node.kill()


def test_a_refused_subscription_is_asked_for_again_with_backoff() -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from hvac_push.sources.mqtt import MqttProducer, _Session
    from hvac_push.sources.mqtt_liveness import NodeLiveness

    class Client:
        def __init__(self) -> None:
            self.sent: list[list[str]] = []

        def subscribe(self, topics: list[tuple[str, int]]) -> tuple[int, int]:
            self.sent.append([t for t, _ in topics])
            return 0, len(self.sent)

        def is_connected(self) -> bool:
            return True

    refused, granted = ReasonCode(PacketTypes.SUBACK, identifier=0x80), ReasonCode(PacketTypes.SUBACK, identifier=1)
    producer = MqttProducer("edge", MqttBroker("127.0.0.1", 1), reconnect_min=0.01, reconnect_max=0.04)
    producer.liveness = NodeLiveness("hvac")
    handed: list[Any] = []
    session = _Session(producer, handed.extend)
    client = session.client = Client()
    session._subscribe(client)
    assert client.sent == [["hvac/+/+/+"], ["hvac/_nodes/+"]]
    session.on_subscribe(client, None, 1, [refused], None)  # NATS electing a leader
    session.on_subscribe(client, None, 2, [granted], None)
    assert producer.initial_sync()[0] is False  # not subscribed yet
    for _ in range(100):  # bounded: the first retry is due after 0.01 s
        session.retry_subscription()
        if len(client.sent) == 3:
            break
        time.sleep(0.005)
    assert client.sent[2] == ["hvac/+/+/+"]  # only what was refused
    session.on_subscribe(client, None, 3, [refused], None)
    assert session._retry_delay == 0.04  # doubled twice, capped at reconnect_max
    time.sleep(0.03)
    session.retry_subscription()
    session.on_subscribe(client, None, 4, [granted], None)
    assert producer.connected and client.sent[3] == ["hvac/+/+/+"]


def test_a_subscription_never_answered_is_asked_for_again() -> None:
    from hvac_push.sources.mqtt import MqttProducer, _Session

    class Client:
        def __init__(self) -> None:
            self.sent: list[list[str]] = []

        def subscribe(self, topics: list[tuple[str, int]]) -> tuple[int, int]:
            self.sent.append([t for t, _ in topics])
            return 0, len(self.sent)

        def is_connected(self) -> bool:
            return True

    producer = MqttProducer("edge", MqttBroker("127.0.0.1", 1), reconnect_min=0.01, reconnect_max=0.04)
    session = _Session(producer, lambda samples: None)
    session.subscribe_timeout = 0.02
    client = session.client = Client()
    session._subscribe(client)
    for _ in range(200):  # bounded: timeout 0.02 s, then a retry after 0.01 s
        session.retry_subscription()
        if len(client.sent) == 2:
            break
        time.sleep(0.005)
    assert client.sent == [["hvac/+/+/+"], ["hvac/+/+/+"]]


def test_a_node_that_acknowledges_nothing_is_left_for_the_next() -> None:
    import socket

    from twisted.internet.task import Clock

    from hvac_push.core.hub import Hub

    ours, theirs = socket.socketpair()

    class Client:
        def socket(self) -> socket.socket:
            return ours

    link = parse_broker_url("mqtt://127.0.0.1:1,127.0.0.1:2/hvac?node=c1")
    bridge = MqttBridge(Hub(), Clock(), link)
    bridge._client = Client()
    try:
        bridge.connected, bridge._inflight = True, 3
        bridge._check_acks()
        assert bridge.stalls == 0  # still within the ack timeout
        bridge._progress_at -= bridge.ack_timeout + 1
        bridge._check_acks()
        assert bridge.stalls == 1
        theirs.settimeout(2)
        assert theirs.recv(1) == b""  # shut: paho sees the connection lost and moves on
    finally:
        ours.close()
        theirs.close()
