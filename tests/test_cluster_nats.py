"""A collector and two edges through a three-node NATS cluster (JetStream + MQTT gateway), nodes dying one by one.

Everything runs as deployed: nats-server nodes and twistd nodes are child
processes on free loopback ports; the collector reads a Modbus device (a
pymodbus server in this process) whose registers the test changes, and
publishes to all three NATS nodes; each edge subscribes (QoS 0) to all three (edge-b
lists them in another order, so the two edges sit on different nodes).

Bounds stated here: after every step both edges show exactly the collector's
values and statuses within CONVERGE seconds; a hard-killed collector's points
are down on both edges within its keepalive (KEEPALIVE seconds).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.brokers import ModbusServer
from tests.nats_cluster import NatsCluster, NatsNode, nats_binary
from tests.test_cluster import _listening_node, _node
from tests.wsprobe import first_messages, first_start

CYCLES = 10
CONVERGE = 60.0
KEEPALIVE = 15
POINTS = ("site/ahu-1/supply_temp", "site/ahu-1/fan_speed", "site/ahu-1/setpoint")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(nats_binary() is None, reason="nats-server is not installed (scripts/bootstrap --test installs it)"),
]


def _plant(modbus_port: int) -> str:
    return f"""
[modbus.plc]
host = "127.0.0.1"
port = {modbus_port}
poll_interval = 0.2
timeout = 0.5

[units.ahu-1]
site = "site"
source = "modbus.plc"

[units.ahu-1.points.supply_temp]
name = "Supply air temperature"
unit = "°C"
register = 0
scale = 0.1
interval = 5

[units.ahu-1.points.fan_speed]
unit = "%"
register = 1
interval = 5

[units.ahu-1.points.setpoint]
unit = "°C"
register = 2
scale = 0.1
interval = 5
"""


def _warm(node: NatsNode, timeout: float = 30.0) -> None:
    """A retained round trip through C{node}'s MQTT gateway: it serves once JetStream answers there."""
    from paho.mqtt.client import Client, MQTTv311
    from paho.mqtt.enums import CallbackAPIVersion

    got = threading.Event()
    client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTv311, clean_session=True)
    client.on_message = lambda c, u, m: got.set()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"warmup/{node.name}", 1)
    client.connect_async("127.0.0.1", node.mqtt_port, 5)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while not got.is_set() and time.monotonic() < deadline:
            if client.is_connected():
                client.publish(f"warmup/{node.name}", b"1", qos=1, retain=True)
            got.wait(1.0)
        assert got.is_set(), f"nats {node.name}: no MQTT round trip within {timeout}s"
    finally:
        client.disconnect()
        client.loop_stop()


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _state(port: int) -> dict[str, tuple[Any, str]]:
    """The node's points as (value, status), from a fresh snapshot; {} while it does not answer."""
    try:
        (snapshot,) = first_messages(port, count=1, timeout=3.0)
    except (OSError, ValueError):
        return {}
    return {pid: (p["value"], p["status"]) for pid, p in snapshot["points"].items()}


class Watch:
    """Samples both edges while waiting, remembering every status each point showed."""

    def __init__(self, edges: dict[str, int]):
        self.edges = edges
        self.seen: dict[str, set[str]] = {name: set() for name in edges}

    def until(self, predicate: Callable[[dict[str, dict[str, tuple[Any, str]]]], bool], seconds: float) -> float:
        started = time.monotonic()
        last: Any = None
        while time.monotonic() - started < seconds:
            states = {name: _state(port) for name, port in self.edges.items()}
            for name, state in states.items():
                self.seen[name].update(status for _, status in state.values())
            if predicate(states):
                return time.monotonic() - started
            last = states
            time.sleep(0.1)
        raise AssertionError(f"not within {seconds}s; last: {last}")


def test_edges_follow_the_collector_through_nats_node_and_collector_kills(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path)
    modbus = ModbusServer()
    processes: dict[str, subprocess.Popen[str]] = {}
    try:
        cluster.start()
        for node in cluster.nodes:
            _warm(node)
        modbus.start()
        plant = tmp_path / "plant.toml"
        plant.write_text(_plant(modbus.port))
        nodes = [f"127.0.0.1:{n.mqtt_port}" for n in cluster.nodes]
        ports: dict[str, int] = {}

        def collector_args(port: int) -> tuple[str, ...]:
            return ("--config", str(plant), "--listen", f"tcp:{port}:interface=127.0.0.1",
                    "--publish", f"mqtt://{','.join(nodes)}/hvac?node=collector-1&keepalive={KEEPALIVE}")

        def first_collector(port: int) -> subprocess.Popen[str]:
            process, [ports["collector"]] = _listening_node(tmp_path, "collector", *collector_args(port))
            return process

        # The collector restarts on its port: one below the ephemeral range, moved only on a clash at the first start.
        processes["collector"] = first_start(first_collector)
        # QoS 0 subscriptions: no JetStream consumer per edge, so an edge's failover needs no leader election.
        rotated = nodes[1:] + nodes[:1]
        for name, brokers in (("edge-a", nodes), ("edge-b", rotated)):
            processes[name], [ports[name]] = _listening_node(
                tmp_path, name, "--subscribe", f"mqtt://{','.join(brokers)}/hvac?qos=0",
                "--listen", "tcp:0:interface=127.0.0.1",
            )
        watch = Watch({"edge-a": ports["edge-a"], "edge-b": ports["edge-b"]})
        figures: dict[str, list[float]] = {"node kill": [], "node back": [], "collector down": [], "collector back": []}

        step = 0

        def converged(states: dict[str, dict[str, tuple[Any, str]]]) -> bool:
            """The collector has this step's values, all ok, and both edges show exactly its state."""
            truth = _state(ports["collector"])
            want = {POINTS[0]: (200 + step) / 10, POINTS[1]: 30 + step, POINTS[2]: (190 + step) / 10}
            if set(truth) != set(POINTS) or any(
                status != "ok" or round(value, 6) != want[pid] for pid, (value, status) in truth.items()
            ):
                return False
            return all(state == truth for state in states.values())

        def values(step: int) -> None:
            modbus.set("holding", 0, [200 + step, 30 + step, 190 + step])

        values(step)
        figures["start"] = [watch.until(converged, 60.0)]
        for cycle in range(CYCLES):
            index = cycle % len(cluster.nodes)
            step += 1
            values(step)
            cluster.nodes[index].kill()
            figures["node kill"].append(watch.until(converged, CONVERGE))
            print(f"cycle {cycle}: killed n{index + 1}, converged in {figures['node kill'][-1]:.2f}s", watch.seen)
            cluster.restart(index)
            _warm(cluster.nodes[index])
            step += 1
            values(step)
            figures["node back"].append(watch.until(converged, CONVERGE))
            assert not any("fault" in seen for seen in watch.seen.values()), (cycle, watch.seen)

        for _ in range(2):
            processes["collector"].kill()  # SIGKILL: no goodbye, the broker sends its last will
            processes["collector"].wait(timeout=10)
            killed = time.monotonic()

            def all_down(states: dict[str, dict[str, tuple[Any, str]]]) -> bool:
                return all(set(state) == set(POINTS) and all(s == "down" for _, s in state.values())
                           for state in states.values())

            watch.until(all_down, KEEPALIVE)
            figures["collector down"].append(time.monotonic() - killed)
            step += 1
            values(step)
            processes["collector"] = _node(tmp_path, "collector", *collector_args(ports["collector"]))
            figures["collector back"].append(watch.until(converged, 30.0))
        assert not any("fault" in seen for seen in watch.seen.values()), watch.seen
        print("\nNATS failover figures (seconds):", {k: [round(v, 2) for v in vs] for k, vs in figures.items()},
              "statuses seen on edges:", watch.seen)
    finally:
        for process in processes.values():
            _stop(process)
        cluster.stop()
        modbus.stop()
    for name in ("edge-a", "edge-b"):
        text = (tmp_path / f"{name}.log").read_text()
        assert "Traceback" not in text, text[-3000:]
