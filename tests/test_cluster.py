"""hvac_push.ops.cluster and hvac_push.ops.reuseport: nodes share a plant through a real mosquitto broker;
collectors publish, edges subscribe.

In-process tests run several L{PushService}s in this test process; the
subprocess tests run twistd nodes exactly as deployed (docs/deployment.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from hvac_push.ops.cluster import MqttBridge, add_sync_readiness, edge_meta, mqtt_fed, parse_broker_url, subscriber
from hvac_push.core.points import PointMeta, Sample
from hvac_push.sources.mqtt import BadPayload, parse_message
from hvac_push.testing import connect
from tests.brokers import Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.conftest import RunningServer, start_server, stop_server
from tests.helpers import eventually, until_state, within
from tests.rawws import RawClient
from tests.wsprobe import bound_ports, closed_port  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).with_name("twistd"))


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


# -- pieces ---------------------------------------------------------------------


def test_broker_urls():
    url = parse_broker_url("mqtt://edge:p%40ss@10.0.0.5:1884/site-a/hvac")
    broker = url.broker
    assert (broker.host, broker.port, url.prefix, broker.username, broker.password, broker.tls is not None) == (
        "10.0.0.5", 1884, "site-a/hvac", "edge", "p@ss", False)
    assert url.template == "site-a/hvac/{site}/{unit}/{point}"
    assert "p@ss" not in url.describe()
    assert url.describe() == "mqtt://edge@10.0.0.5:1884/site-a/hvac"
    plain = parse_broker_url("mqtt://127.0.0.1")
    assert (plain.broker.port, plain.prefix) == (1883, "hvac")
    secure = parse_broker_url("mqtts://broker.example?ca=/etc/ca.pem")
    assert secure.broker.tls is not None
    assert (secure.broker.port, secure.broker.tls is not None, secure.broker.tls.ca) == (8883, True, "/etc/ca.pem")
    for bad in ("http://x", "mqtt://", "mqtt://x/a/+", "mqtt://x?ca=/c", "mqtts://x?cert=1", "mqtt://x:99999",
                "mqtt://u:p@x?password_file=/etc/hostname", "mqtt://u@x?password_file=/nonexistent"):
        with pytest.raises(ValueError):
            parse_broker_url(bad)


def test_broker_url_password_file(tmp_path):
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    url = parse_broker_url(f"mqtt://edge@127.0.0.1:1884/hvac?password_file={secret}")
    assert (url.broker.username, url.broker.password) == ("edge", "s3cret")


def test_options_build_edges_and_collectors():
    from twisted.python import usage
    from twisted.internet.testing import MemoryReactorClock

    from hvac_push.ops.tap import Options, makeService

    edge = Options()
    edge.parseOptions(["--subscribe", "mqtt://127.0.0.1:1884/plant", "--listen", "tcp:0:interface=127.0.0.1"])
    service: Any = makeService(edge, reactor=MemoryReactorClock())
    assert [p.producer.name for p in service.producers] == ["subscribe.1"]  # no simulator on an edge
    assert service.producers[0].producer.topics.template == "plant/{site}/{unit}/{point}"
    assert "mqtt-sync" in service.readiness.names()
    collector = Options()
    collector.parseOptions(["--publish", "mqtt://127.0.0.1:1884", "--sim-units", "1"])
    service = makeService(collector, reactor=MemoryReactorClock())
    assert [p.producer.name for p in service.producers] == ["simulator"]
    assert any(isinstance(s, MqttBridge) for s in service)
    with pytest.raises(usage.UsageError, match="--publish"):
        Options().parseOptions(["--publish", "tcp://127.0.0.1"])


def test_collector_payloads_carry_status_name_and_interval():
    message = parse_message(b'{"value":6.8,"ts":1764000000.5,"unit":"C","status":"fault","name":"Supply","interval":2}')
    assert (message.value, message.status, message.name, message.interval) == (6.8, "fault", "Supply", 2.0)
    for bad in (b'{"value":1,"status":"broken"}', b'{"value":1,"interval":0}', b'{"value":1,"name":5}'):
        with pytest.raises(BadPayload):
            parse_message(bad)


# -- in-process nodes -----------------------------------------------------------


async def _collector(broker: Mosquitto, **bridge_options: Any) -> tuple[RunningServer, MqttBridge]:
    running = await start_server()
    url = parse_broker_url(f"mqtt://127.0.0.1:{broker.port}/hvac")
    bridge_options.setdefault("reconnect_min", 0.05)
    bridge_options.setdefault("reconnect_max", 0.3)
    bridge = MqttBridge(running.hub, reactor(), url, exclude=mqtt_fed(running.service), **bridge_options)
    bridge.setServiceParent(running.service)  # starts it: the service is running
    return running, bridge


async def _edge(broker: Mosquitto, name: str = "edge", **options: Any) -> RunningServer:
    source = subscriber(parse_broker_url(f"mqtt://127.0.0.1:{broker.port}/hvac"), name=name)
    source.reconnect_min, source.reconnect_max, source.failover_grace = 0.05, 0.3, 0.5
    running = await start_server([source], **options)
    source.on_meta = edge_meta(running.service)
    add_sync_readiness(running.service)
    return running



def _is(point_id: str, status: str, value: Any = None) -> Any:
    def check(state: dict) -> bool:
        point = state.get(point_id)
        return point is not None and point["status"] == status and (value is None or point["value"] == value)

    return check


def _fetch_health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


async def _health(port: int) -> tuple[int, dict]:
    from twisted.internet.threads import deferToThread

    return await within(10, deferToThread(_fetch_health, port))


@pytest_twisted.ensureDeferred
async def test_a_value_published_on_the_collector_reaches_clients_of_both_edges(mosquitto):
    collector, bridge = await _collector(mosquitto)
    edges = [await _edge(mosquitto, "edge-a"), await _edge(mosquitto, "edge-b")]
    try:
        collector.service.hub.configure("plant/chiller-1/supply_temp", PointMeta(name="CHW supply", expected_interval=2.0))
        clients = [await within(5, connect(reactor(), edge.port)) for edge in edges]
        await eventually(lambda: bridge.connected and all(e.service.producers[0].producer.connected for e in edges), 10)
        collector.hub.publish(Sample("plant/chiller-1/supply_temp", 6.8, "°C", time.time()))
        for client in clients:
            state = await until_state(client, _is("plant/chiller-1/supply_temp", "ok", 6.8))
            assert state["plant/chiller-1/supply_temp"]["unit"] == "°C"
        collector.hub.publish(Sample("plant/chiller-1/supply_temp", 7.1, "°C", time.time()))
        for client in clients:
            await until_state(client, _is("plant/chiller-1/supply_temp", "ok", 7.1))
        # The collector's point metadata travels with it; its status too.
        for edge in edges:
            await eventually(lambda: edge.hub.meta.get("plant/chiller-1/supply_temp") is not None, 5)
            assert edge.hub.meta["plant/chiller-1/supply_temp"].expected_interval == 2.0
            assert edge.hub.meta["plant/chiller-1/supply_temp"].name == "CHW supply"
        collector.hub.set_status(["plant/chiller-1/supply_temp"], "fault")
        for client in clients:
            await until_state(client, _is("plant/chiller-1/supply_temp", "fault", 7.1))
        for client in clients:
            client.sendClose()
            await within(5, client.closed)
    finally:
        for edge in edges:
            await stop_server(edge)
        await stop_server(collector)


@pytest_twisted.ensureDeferred
async def test_when_a_point_falls_silent_it_goes_stale_at_the_edges_after_its_interval(mosquitto):
    collector, bridge = await _collector(mosquitto)
    edge = await _edge(mosquitto, stale_check=0.05)
    try:
        collector.service.hub.configure("plant/ahu-2/fan_speed", PointMeta(expected_interval=0.2))
        client = await within(5, connect(reactor(), edge.port))
        await eventually(lambda: bridge.connected, 10)
        collector.hub.publish(Sample("plant/ahu-2/fan_speed", 40.0, "%", time.time()))
        await until_state(client, _is("plant/ahu-2/fan_speed", "ok", 40.0))
        # No more samples: the collector and the broker stay up, only the point's silence tells
        # (a collector that stops is down at once: tests/test_cluster_liveness.py).
        started = time.monotonic()
        await until_state(client, _is("plant/ahu-2/fan_speed", "stale", 40.0))
        assert time.monotonic() - started < 3  # 3 x 0.2 s, learned from the payload, not the 60 s default
        client.sendClose()
        await within(5, client.closed)
    finally:
        await stop_server(edge)
        if collector.service.running:
            await stop_server(collector)


@pytest_twisted.ensureDeferred
async def test_a_node_that_is_edge_and_collector_does_not_echo_what_it_receives(mosquitto):
    collector, _ = await _collector(mosquitto)
    edge = await _edge(mosquitto)
    url = parse_broker_url(f"mqtt://127.0.0.1:{mosquitto.port}/hvac")
    echo = MqttBridge(edge.hub, reactor(), url, exclude=mqtt_fed(edge.service), reconnect_min=0.05)
    echo.setServiceParent(edge.service)
    try:
        await eventually(lambda: echo.connected and edge.service.producers[0].producer.connected, 10)
        edge.hub.publish(Sample("plant/edge-local/power", 3.0, "kW", time.time()))  # the edge's own point
        collector.hub.publish(Sample("plant/ahu-1/fan_speed", 55.0, "%", time.time()))
        await eventually(lambda: edge.hub.get("plant/ahu-1/fan_speed") is not None, 10)
        await eventually(lambda: echo.published >= 1, 5)
        assert "plant/ahu-1/fan_speed" not in echo._last  # received from MQTT: never sent back
        assert "plant/edge-local/power" in echo._last
    finally:
        await stop_server(edge)
        await stop_server(collector)


@pytest_twisted.ensureDeferred
async def test_broker_loss_marks_the_points_down_then_everything_comes_back_and_clients_stay(mosquitto):
    collector, bridge = await _collector(mosquitto)
    edges = [await _edge(mosquitto, "edge-a"), await _edge(mosquitto, "edge-b")]
    try:
        clients = [await within(5, connect(reactor(), edge.port)) for edge in edges]
        await eventually(lambda: bridge.connected, 10)
        now = time.time()
        collector.hub.publish_many([
            Sample("plant/crac-1/supply_temp", 18.0, "°C", now), Sample("plant/crac-1/fan_speed", 60.0, "%", now),
        ])
        for client in clients:
            await until_state(client, lambda s: _is("plant/crac-1/supply_temp", "ok", 18.0)(s)
                         and _is("plant/crac-1/fan_speed", "ok", 60.0)(s))

        mosquitto.kill()
        for client in clients:
            await until_state(client, lambda s: _is("plant/crac-1/supply_temp", "down", 18.0)(s)
                         and _is("plant/crac-1/fan_speed", "down")(s))
        await eventually(lambda: not bridge.connected, 5)
        # While the broker is down the collector conflates: only the newest value per point is kept.
        for step in range(50):
            collector.hub.publish(Sample("plant/crac-1/supply_temp", 18.0 + step / 10, "°C", time.time()))
        assert bridge.pending <= 2

        mosquitto.start()  # same port, empty: no persistence, no retained messages
        await eventually(lambda: bridge.connected, 10)
        for client in clients:
            state = await until_state(client, lambda s: _is("plant/crac-1/supply_temp", "ok", 22.9)(s)
                                 and _is("plant/crac-1/fan_speed", "ok", 60.0)(s), seconds=15)
            assert client.state == client.STATE_OPEN
        assert state["plant/crac-1/supply_temp"]["value"] == collector.hub.get("plant/crac-1/supply_temp").value
        assert bridge.connects >= 2 and bridge.conflated >= 40
        # A brand-new edge gets the whole state from the retained messages the collector sent again.
        late = await _edge(mosquitto, "edge-late")
        edges.append(late)
        await eventually(lambda: late.hub.get("plant/crac-1/fan_speed") is not None, 10)
        for client in clients:
            client.sendClose()
            await within(5, client.closed)
    finally:
        for edge in edges:
            await stop_server(edge)
        await stop_server(collector)


@pytest_twisted.ensureDeferred
async def test_healthz_is_503_until_the_retained_state_is_in_then_200(tmp_path, closed_port):
    from tests.helpers import sleep

    count = 2000
    # mosquitto queues at most max_queued_messages (default 1000) QoS 1 messages per client, retained
    # ones at subscription time included: it must exceed the number of points (docs/deployment.md).
    mosquitto = Mosquitto(tmp_path, extra_config=["max_queued_messages 100000"])
    mosquitto.start()
    collector, bridge = await _collector(mosquitto)
    now = time.time()
    collector.hub.publish_many([Sample(f"plant/unit-{i}/temp", float(i), "°C", now) for i in range(count)])
    try:
        await eventually(lambda: bridge.idle, 15)
    finally:
        await stop_server(collector)  # its retained messages stay on the broker
    nowhere = Mosquitto(tmp_path, port=closed_port)  # never started: connections are refused
    edge = await _edge(mosquitto)
    lost = await _edge(nowhere, "lost")
    try:
        code, health = await _health(edge.port)
        assert code == 503 and health["ready"] is False and health["checks"]["mqtt-sync"]["ok"] is False
        codes = [code]
        for _ in range(300):  # bounded: about 15 s
            await sleep(0.05)
            code, health = await _health(edge.port)
            codes.append(code)
            if code == 200:
                break
        assert codes[-1] == 200, health
        assert set(codes) == {503, 200} and codes.index(200) == codes.count(503)  # 503 ... 503, then 200
        assert len(edge.hub) == count  # ready means synced: every retained point is in
        assert health["checks"]["mqtt-sync"]["ok"] is True

        code, health = await _health(lost.port)
        assert code == 503 and "waiting for 127.0.0.1" in health["checks"]["mqtt-sync"]["detail"]
    finally:
        await stop_server(edge)
        await stop_server(lost)
        mosquitto.kill()


# -- twistd nodes ---------------------------------------------------------------


def _node(tmp_path: Path, name: str, *args: str) -> subprocess.Popen[str]:
    """C{twistd -n hvacpush ARGS} in C{tmp_path}, its output appended to C{NAME.log} (a restart keeps the earlier life)."""
    log = open(tmp_path / f"{name}.log", "a")
    try:
        return subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "hvacpush", *args],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )
    finally:
        log.close()


def _listening_node(tmp_path: Path, name: str, *args: str) -> tuple[subprocess.Popen[str], list[int]]:
    """L{_node} with C{--port-file}: the process and the ports it bound, one per C{--listen} in order.

    Give it C{--listen tcp:0:...} and the kernel picks each port; a fixed port
    that was taken fails with the log, which names the port "already in use".
    """
    port_file = tmp_path / f"{name}.ports"
    port_file.unlink(missing_ok=True)
    process = _node(tmp_path, name, *args, "--port-file", str(port_file))
    try:
        return process, bound_ports(port_file, alive=lambda: process.poll() is None)
    except (RuntimeError, TimeoutError) as e:
        _stop(process)
        log = (tmp_path / f"{name}.log").read_text(errors="replace")
        raise RuntimeError(f"{name} did not listen ({e}): {log[-2000:]}") from None


def _get_health(port: int, timeout: float = 20.0) -> dict:
    """Poll /healthz until it answers 200; bounded."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                health: dict[str, Any] = json.load(response)
                return health
        except urllib.error.HTTPError as e:
            last = json.load(e)
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"127.0.0.1:{port} not ready within {timeout}s: {last}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.mark.slow
def test_clients_of_a_killed_edge_reconnect_to_the_other_and_resync(tmp_path, mosquitto):
    url = f"mqtt://127.0.0.1:{mosquitto.port}/hvac"
    roles = {
        "collector": ("--sim-units", "1", "--sim-rate", "20", "--publish", url),
        "edge-a": ("--subscribe", url), "edge-b": ("--subscribe", url),
    }
    nodes: dict[str, subprocess.Popen[str]] = {}
    ports: dict[str, int] = {}
    try:
        for name, args in roles.items():
            nodes[name], [ports[name]] = _listening_node(tmp_path, name, *args, "--listen", "tcp:0:interface=127.0.0.1")
        for name in ("collector", "edge-a", "edge-b"):
            health = _get_health(ports[name])
            assert health["ready"] is True, (name, health)
        health = _get_health(ports["edge-a"])
        assert health["checks"]["mqtt-sync"]["ok"] is True
        client = RawClient(ports["edge-a"])
        snapshot = client.message()
        deadline = time.monotonic() + 10
        points = dict(snapshot["points"])
        epoch, version = snapshot["epoch"], snapshot["version"]
        while len(points) < 5 and time.monotonic() < deadline:  # the simulated unit has several points
            message = client.message()
            if message["type"] == "update":
                points.update(message["points"])
                version = message["version"]
        assert len(points) >= 5

        nodes["edge-a"].kill()  # a crash: no goodbye
        nodes["edge-a"].wait(timeout=10)
        assert client.at_eof(timeout=5)
        client.close()

        # The client (or the load balancer in front) goes to the other edge and asks to resume.
        moved = RawClient(ports["edge-b"], path=f"/ws?since={version}&epoch={epoch}")
        resync = moved.message()
        assert resync["type"] == "snapshot" and resync["resync"] is True and resync["epoch"] != epoch
        assert set(points) <= set(resync["points"])  # the full state, from the retained messages
        assert all(p["status"] == "ok" for p in resync["points"].values())
        update = moved.message()
        assert update["type"] == "update" and update["epoch"] == resync["epoch"]  # live again
        moved.send_close()
        moved.close()
    finally:
        for process in nodes.values():
            _stop(process)
    for name in ("collector", "edge-b"):
        text = (tmp_path / f"{name}.log").read_text()
        assert "Traceback" not in text, text


@pytest.mark.slow
def test_reuseport_lets_two_processes_accept_on_one_port(tmp_path):
    # The first worker binds a port the kernel picks and holds it; the second asks for that port.
    first, [port] = _listening_node(tmp_path, "worker-0", "--sim-units", "1", "--listen", "reuseport:0:interface=127.0.0.1")
    nodes = [first]
    try:
        nodes.append(
            _node(tmp_path, "worker-1", "--sim-units", "1", "--listen", f"reuseport:{port}:interface=127.0.0.1")
        )
        _get_health(port)
        for _ in range(100):  # bounded: until both have bound the port
            listeners = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
            if listeners.count("LISTEN") == 2 or any(n.poll() is not None for n in nodes):
                break
            time.sleep(0.1)
        assert all(n.poll() is None for n in nodes), "a worker exited: the port was not shared"
        epochs = set()
        clients = []
        for _ in range(24):  # the kernel spreads connections by a hash of the client's port
            client = RawClient(port)
            epochs.add(client.message()["epoch"])
            clients.append(client)
        assert len(epochs) == 2
        for client in clients:
            client.send_close()
            client.close()
    finally:
        for process in nodes:
            _stop(process)
    for i in range(2):
        assert "Traceback" not in (tmp_path / f"worker-{i}.log").read_text()


def test_reuseport_descriptions_are_checked():
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    endpoint: Any = serverFromString(MemoryReactor(), "reuseport:8080:interface=127.0.0.1:backlog=100")
    assert (endpoint.port, endpoint.interface, endpoint.backlog) == (8080, "127.0.0.1", 100)
    for bad in ("reuseport:http", "reuseport:8080:color=red", "reuseport:70000"):
        with pytest.raises(ValueError):
            serverFromString(MemoryReactor(), bad)


def test_reuseport_sockets_share_a_port_in_one_process():
    from twisted.internet.testing import MemoryReactor

    from hvac_push.ops.reuseport import ReusePortEndpoint

    class Adopting(MemoryReactor):
        adopted: list[socket.socket]

        def adoptStreamPort(self, fd: int, family: int, factory: Any) -> Any:
            self.adopted.append(socket.socket(family, socket.SOCK_STREAM, fileno=os.dup(fd)))
            return object()

    memory = Adopting()
    memory.adopted = []
    with socket.socket() as holder:  # holds the port (with SO_REUSEPORT, as the endpoints bind it) for the test
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        for _ in range(2):
            ReusePortEndpoint(memory, port, "127.0.0.1").listen(object())
        sockets = memory.adopted
        try:
            assert [s.getsockname()[1] for s in sockets] == [port, port]
        finally:
            for s in sockets:
                s.close()


@pytest_twisted.ensureDeferred
async def test_collector_and_edge_over_mqtts(tmp_path):
    from tests.brokers import make_tls_files

    files = make_tls_files(tmp_path)
    broker = Mosquitto(
        tmp_path, extra_config=[f"cafile {files['ca']}", f"certfile {files['cert']}", f"keyfile {files['key']}"]
    )
    broker.start()
    url = parse_broker_url(f"mqtts://127.0.0.1:{broker.port}/secure/hvac?ca={files['ca']}")
    collector = await start_server()
    bridge = MqttBridge(collector.hub, reactor(), url, reconnect_min=0.05)
    bridge.setServiceParent(collector.service)
    edge = await start_server([subscriber(url)])
    try:
        client = await within(5, connect(reactor(), edge.port))
        await eventually(lambda: bridge.connected, 10)
        collector.hub.publish(Sample("plant/boiler-1/flow_temp", 71.5, "°C", time.time()))
        await until_state(client, _is("plant/boiler-1/flow_temp", "ok", 71.5))
        client.sendClose()
        await within(5, client.closed)
    finally:
        await stop_server(edge)
        await stop_server(collector)
        broker.kill()
