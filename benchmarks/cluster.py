"""Several hvac-push processes sharing one port (``reuseport:``), as one benchmark "server".

benchmarks/run.py starts this script like any other server and measures the
CPU of its whole process tree (this supervisor, every twistd, and mosquitto
when there is one). Two modes:

- default: N twistd processes, each with its own simulator (same seed, same
  rate), all listening on ``reuseport:PORT``;
- ``--broker``: a private mosquitto (loopback, free port), one collector
  (``--publish``, the simulator) and N edges (``--subscribe``) on
  ``reuseport:PORT``: the deployment of docs/deployment.md on one machine;
- ``--nats``: the same through a private three-node NATS cluster (JetStream and
  its MQTT gateway, Debian's nats-server), collector and edges given all three
  nodes (edges subscribe with ``?qos=0``, docs/deployment.md#a-clustered-broker).

Each edge also listens on a private port; the supervisor prints
``cluster: ready`` once every edge answers /healthz with 200 (run.py waits for
that line), samples each edge's client count every second, and prints the
peak split when it stops. SIGTERM / SIGINT stop every child (SIGTERM, then
SIGKILL after a bound). If any child exits on its own, all are stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def twistd() -> str:
    candidate = Path(sys.executable).with_name("twistd")
    return str(candidate) if candidate.exists() else (shutil.which("twistd") or "twistd")


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, {}
    except OSError:
        return 0, {}


def start_nats(folder: Path, children: list[tuple[str, subprocess.Popen[bytes]]]) -> list[int]:
    """Three routed nats-server nodes (JetStream, MQTT gateway) on free loopback ports; their MQTT ports."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    routes = ", ".join(f"nats-route://{HOST}:{route}" for _, route, _ in ports)
    for index, (client, route, mqtt) in enumerate(ports):
        store = folder / f"n{index + 1}-store"
        store.mkdir()
        conf = folder / f"n{index + 1}.conf"
        conf.write_text(
            f"server_name: n{index + 1}\nlisten: {HOST}:{client}\njetstream {{ store_dir: {str(store)!r} }}\n"
            f"cluster {{ name: bench, listen: {HOST}:{route}, routes: [{routes}] }}\nmqtt {{ listen: {HOST}:{mqtt} }}\n"
        )
        children.append((f"nats-{index + 1}", subprocess.Popen(
            [binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return [mqtt for _, _, mqtt in ports]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="the shared port (127.0.0.1)")
    p.add_argument("--processes", type=int, default=2, help="edge processes on the shared port")
    p.add_argument("--rate", type=float, default=100.0, help="simulator updates per second")
    p.add_argument("--units", type=int, default=6, help="simulated units")
    p.add_argument("--broker", action="store_true", help="feed the edges from a collector through mosquitto")
    p.add_argument("--nats", action="store_true", help="... through a three-node NATS cluster instead")
    args = p.parse_args(argv)
    if not 1 <= args.processes <= 64:
        p.error("--processes must be 1-64")

    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    tmp = tempfile.TemporaryDirectory(prefix="hvac-cluster-")
    sim = ["--sim-units", str(args.units), "--sim-rate", str(args.rate), "--sim-seed", "1"]
    feed: list[str] = sim
    try:
        if args.nats:
            nodes = start_nats(Path(tmp.name), children)
            url = f"mqtt://{','.join(f'{HOST}:{port}' for port in nodes)}/hvac"
            children.append(("collector", subprocess.Popen(
                [twistd(), "-n", "--pidfile=", "hvacpush", *sim, "--publish", url + "?node=bench",
                 "--listen", f"tcp:{free_port()}:interface={HOST}"],
                cwd=tmp.name, env=env, stdin=subprocess.DEVNULL)))
            feed = ["--subscribe", url + "?qos=0"]
        elif args.broker:
            mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            broker_port = free_port()
            conf = Path(tmp.name) / "mosquitto.conf"
            conf.write_text(
                f"listener {broker_port} {HOST}\nallow_anonymous true\npersistence false\n"
                "max_queued_messages 100000\nlog_dest stderr\nlog_type error\n"
                + ("user root\n" if os.geteuid() == 0 else "")
            )
            children.append(("mosquitto", subprocess.Popen([mosquitto, "-c", str(conf)], stdin=subprocess.DEVNULL)))
            for _ in range(200):  # bounded wait for the broker
                try:
                    socket.create_connection((HOST, broker_port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.05)
            url = f"mqtt://{HOST}:{broker_port}/hvac"
            children.append(("collector", subprocess.Popen(
                [twistd(), "-n", "--pidfile=", "hvacpush", *sim, "--publish", url,
                 "--listen", f"tcp:{free_port()}:interface={HOST}"],
                cwd=tmp.name, env=env, stdin=subprocess.DEVNULL)))
            feed = ["--subscribe", url]
        private = []
        for index in range(args.processes):
            own = free_port()
            private.append(own)
            children.append((f"edge-{index + 1}", subprocess.Popen(
                [twistd(), "-n", "--pidfile=", "hvacpush", *feed, "--max-connections-per-ip", "0",
                 "--listen", f"reuseport:{args.port}:interface={HOST}:backlog=1024",
                 "--listen", f"tcp:{own}:interface={HOST}"],
                cwd=tmp.name, env=env, stdin=subprocess.DEVNULL)))
        deadline = time.monotonic() + READY_TIMEOUT_S + (30.0 if args.nats else 0.0)  # JetStream forms first
        while not stopping and time.monotonic() < deadline:
            if all(health(port)[0] == 200 for port in private):
                print(f"cluster: ready ({args.processes} processes on {HOST}:{args.port})", flush=True)
                break
            time.sleep(0.2)
        else:
            if not stopping:
                print("cluster: not ready in time", flush=True)
                return 1
        peak = [0] * len(private)
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    print(f"cluster: {name} exited ({child.returncode}); stopping", flush=True)
                    stopping = True
            for index, port in enumerate(private):
                peak[index] = max(peak[index], int(health(port)[1].get("clients", 0) or 0))
            time.sleep(1.0)
        print(f"cluster: peak clients per process: {peak}", flush=True)
        return 0
    finally:
        for _, child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for _, child in children:
            try:
                child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
