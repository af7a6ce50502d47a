"""A private three-node NATS cluster with JetStream and its MQTT gateway, for the clustered-broker tests.

Debian's C{nats-server} (scripts/bootstrap --test installs it); every node on
free loopback ports with its own store folder and routes to the other two
(../shared/README.md has the recipe). Retained MQTT messages live in JetStream
streams replicated across the nodes, so one node may die without losing them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Sequence

from tests.brokers import kill_hard
from tests.wsprobe import port_held, restartable_port, wait_owned


def nats_binary() -> str | None:
    found = shutil.which("nats-server")
    if found:
        return found
    for candidate in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class NatsNode:
    """One node: its client, cluster-route and MQTT ports, its config file and its process."""

    def __init__(self, folder: Path, name: str):
        self.folder = folder
        self.name = name
        self.pick_ports()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = folder / f"{name}.log"

    def pick_ports(self) -> None:
        """nats-server needs its ports in its config (routes name each other's): picked free beforehand.

        Restarted on the same ports after each kill: ports below the ephemeral
        range, which no outgoing connection can take meanwhile.
        """
        self.port, self.route_port, self.mqtt_port = restartable_port(), restartable_port(), restartable_port()

    @property
    def ports(self) -> list[int]:
        return [self.port, self.route_port, self.mqtt_port]

    def write_config(self, routes: Sequence[int]) -> Path:
        store = self.folder / f"{self.name}-store"
        store.mkdir(exist_ok=True)
        conf = self.folder / f"{self.name}.conf"
        conf.write_text("\n".join([
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"jetstream {{ store_dir: {str(store)!r} }}",
            "cluster {",
            "  name: hvac-test",
            f"  listen: 127.0.0.1:{self.route_port}",
            "  routes: [" + ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes) + "]",
            "}",
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}",
        ]) + "\n")
        return conf

    def start(self, binary: str, conf: Path) -> None:
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        process, self.process = self.process, None
        kill_hard(process)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NatsCluster:
    """Three nodes routed to each other; L{start} returns once every node's MQTT gateway takes connections."""

    def __init__(self, folder: Path, size: int = 3):
        binary = nats_binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed (scripts/bootstrap --test installs it)")
        self.binary = binary
        self.nodes = [NatsNode(folder, f"n{i + 1}") for i in range(size)]
        self._write_configs()

    def _write_configs(self) -> None:
        routes = [node.route_port for node in self.nodes]
        self._confs = [node.write_config(routes) for node in self.nodes]

    @property
    def mqtt_addresses(self) -> str:
        """C{127.0.0.1:P1,127.0.0.1:P2,...}: for an mqtt:// URL."""
        return ",".join(f"127.0.0.1:{node.mqtt_port}" for node in self.nodes)

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """Start every node; when a picked port was taken meanwhile, all nodes start again on new ports."""
        for attempt in range(attempts):
            try:
                for node, conf in zip(self.nodes, self._confs):
                    node.start(self.binary, conf)
                for node in self.nodes:
                    self.wait_ready(node, timeout)
                return
            except (RuntimeError, TimeoutError):
                self.stop()
                if attempt == attempts - 1 or not any(port_held(p) for node in self.nodes for p in node.ports):
                    raise
                for node in self.nodes:
                    node.pick_ports()
                self._write_configs()

    def restart(self, index: int, timeout: float = 30.0) -> None:
        node = self.nodes[index]
        node.kill()
        node.start(self.binary, self._confs[index])
        self.wait_ready(node, timeout)

    def wait_ready(self, node: NatsNode, timeout: float) -> None:
        """Until the node's MQTT gateway accepts a connection (it opens once JetStream is usable)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not node.alive:
                raise RuntimeError(f"nats {node.name} exited: {node.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            # Whoever accepted may be another process that took the port: make sure this node holds all three.
            wait_owned(node.process, node.ports, max(1.0, deadline - time.monotonic()))
            return
        raise TimeoutError(f"nats {node.name}: no MQTT listener within {timeout}s")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
