"""How many points and updates per second the BACnet source sustains from one device, over COV and over polling.

A bacpypes3 device with C{--points} analog objects runs as a child process on
127.0.0.1. For the COV run its objects support COV and it changes every value
as fast as it can, so each change is one notification; for the polling run its
objects refuse COV and the producer reads them all with ReadPropertyMultiple
every C{--interval} seconds. In this process a L{BacnetProducer} (its own
thread and asyncio loop, as under twistd) counts the samples it hands to
C{publish} over C{--seconds}, after a warm-up. CPU of both processes is sampled
too, since on loopback either side can be the limit.

    .venv/bin/python benchmarks/bacnet_rate.py                  # 100 points, 8 s per mode
    .venv/bin/python benchmarks/bacnet_rate.py --points 500 --seconds 5

Everything is bounded: the device is killed after each run, the producer is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the device (child process) ---------------------------------------------------


def run_device(port: int, points: int, cov: bool) -> None:
    """Serve C{points} analog values on 127.0.0.1:C{port}; with C{cov}, change them all, all the time."""
    from bacpypes3.app import Application
    from bacpypes3.local.analog import AnalogValueObject
    from bacpypes3.local.device import DeviceObject
    from bacpypes3.local.networkport import NetworkPortObject

    class NoCov(AnalogValueObject):
        _cov_criteria = None

    async def main() -> None:
        kind = AnalogValueObject if cov else NoCov
        objects: list[Any] = [
            kind(objectIdentifier=("analog-value", i), objectName=f"av-{i}", presentValue=0.0,
                 units="degrees-celsius", covIncrement=0.0, outOfService=False)
            for i in range(1, points + 1)
        ]
        app = Application.from_object_list([
            DeviceObject(objectIdentifier=("device", 2001), objectName="bench", vendorIdentifier=999),
            NetworkPortObject(f"127.0.0.1:{port}", objectIdentifier=("network-port", 1), objectName="np"),
            *objects,
        ])
        for link in app.link_layers.values():
            await asyncio.gather(*link.server._transport_tasks)
        print("ready", flush=True)
        value = 0.0
        while True:
            if cov:
                value += 1.0
                for obj in objects:
                    obj.presentValue = value
            await asyncio.sleep(0.001)

    asyncio.run(main())


# -- the measurement ------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(mode: str, points: int, seconds: float, interval: float, warmup: float) -> dict[str, Any]:
    from hvac_push.sources.bacnet import BacnetPoint, BacnetProducer

    port = free_udp_port()
    device = subprocess.Popen(
        [sys.executable, __file__, "--device", str(port), "--points", str(points), "--mode", mode],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert device.stdout is not None
        line = device.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the device did not start: {line!r}")
        address = f"127.0.0.1:{port}"
        producer = BacnetProducer(
            "bacnet.bench", f"127.0.0.1:{free_udp_port()}",
            [BacnetPoint(f"bench/dev/av{i}", f"analog-value,{i}", address=address) for i in range(1, points + 1)],
            apdu_timeout=2.0, retries=1, interval=interval, cov_lifetime=300,
        )
        counted = [0]
        seen: set[str] = set()

        def publish(batch: Sequence[Any]) -> None:
            counted[0] += len(batch)
            if len(seen) < points:
                seen.update(s.point_id for s in batch)

        stop = threading.Event()
        thread = threading.Thread(target=producer.run, args=(publish, stop), daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while len(seen) < points or len(producer.modes) < points:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(seen)} of {points} points arrived within 30 s")
            time.sleep(0.05)
        time.sleep(warmup)
        own0, dev0, n0, t0 = time.process_time(), cpu_seconds(device.pid), counted[0], time.monotonic()
        time.sleep(seconds)
        own1, dev1, n1, t1 = time.process_time(), cpu_seconds(device.pid), counted[0], time.monotonic()
        stop.set()
        thread.join(10)
        elapsed = t1 - t0
        modes = sorted(set(producer.modes.values()))
        return {
            "mode": mode,
            "read_as": modes,
            "points": points,
            "seconds": round(elapsed, 2),
            "updates": n1 - n0,
            "updates_per_s": round((n1 - n0) / elapsed),
            "poll_interval_s": interval if mode == "poll" else None,
            "producer_process_cpu_pct": round(100 * (own1 - own0) / elapsed),
            "device_cpu_pct": round(100 * (dev1 - dev0) / elapsed),
            "counters": {k: v for k, v in producer.counters.items() if v},
        }
    finally:
        device.kill()
        device.wait(10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--interval", type=float, default=0.01, help="poll interval for the polling run")
    parser.add_argument("--mode", choices=["cov", "poll", "both"], default="both")
    parser.add_argument("--device", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is not None:
        run_device(args.device, args.points, args.mode == "cov")
        return 0
    if not 1 <= args.points <= 5000 or not 0 < args.seconds <= 60:
        parser.error("--points 1..5000 and --seconds up to 60")
    for mode in (["cov", "poll"] if args.mode == "both" else [args.mode]):
        print(json.dumps(measure(mode, args.points, args.seconds, args.interval, args.warmup)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
