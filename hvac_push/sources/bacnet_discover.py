"""Find BACnet devices and print a plant-file section that serves their points.

C{python -m hvac_push.sources.bacnet discover [--address ADDR] [--target HOST:PORT]}
sends Who-Is (unicast to C{--target}, else broadcast on C{--address}'s subnet),
reads each device's name and object list, then each object's name and units,
and prints a C{[bacnet.NAME]} table with one C{[units.X]} per device. The
output loads as it is; edit names, units and intervals as you like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from hvac_push.sources.bacnet_stack import PortInUse, open_application
from hvac_push.sources.bacnet_maps import MAX_INSTANCE, OBJECT_TYPES, has_broadcast, parse_ip_address, unit_string

#: Object types listed as points (the device object itself is not a point).
POINT_TYPES = tuple(t for t in OBJECT_TYPES if t != "device")
#: Objects per ReadPropertyMultiple while reading names and units.
NAME_BATCH = 20


@dataclass
class FoundObject:
    object: str
    name: str
    unit: str = ""


@dataclass
class FoundDevice:
    instance: int
    address: str
    name: str
    objects: list[FoundObject] = field(default_factory=list)
    problem: str | None = None


class DiscoveryError(Exception):
    """Discovery cannot run (bad arguments, port in use): one line for the user."""


async def discover(address: str, target: str | None, timeout: float, apdu_timeout: float = 3.0) -> list[FoundDevice]:
    """Who-Is, then each answering device's objects with their names and units."""
    from bacpypes3.apdu import ErrorRejectAbortNack
    from bacpypes3.app import Application
    from bacpypes3.pdu import Address

    if target is None and not has_broadcast(address):
        raise DiscoveryError("broadcast discovery needs the subnet: give --address A.B.C.D/PREFIX, or --target HOST:PORT")
    destination = None
    if target is not None:
        target_host, _, target_port = parse_ip_address(target, prefix=False)
        destination = Address(f"{target_host}:{target_port}")
    app = open_application(address, MAX_INSTANCE - 1, "hvac-push discovery", apdu_timeout, 1, app_class=Application)
    try:
        i_ams = await app.who_is(address=destination, timeout=timeout)
        devices: list[FoundDevice] = []
        for i_am in sorted(i_ams or [], key=lambda a: a.iAmDeviceIdentifier[1]):
            instance = int(i_am.iAmDeviceIdentifier[1])
            device_address = str(i_am.pduSource)
            found = FoundDevice(instance, device_address, f"device-{instance}")
            devices.append(found)
            try:
                await _read_device(app, i_am.pduSource, found)
            except ErrorRejectAbortNack as e:
                found.problem = f"{type(e).__name__}: {e}"
        return devices
    finally:
        app.close()


async def _read_device(app: Any, address: Any, found: FoundDevice) -> None:
    from bacpypes3.apdu import ErrorRejectAbortNack

    device_id = ("device", found.instance)
    name = await app.read_property(address, f"device,{found.instance}", "object-name")
    found.name = str(name)
    try:
        object_ids = list(await app.read_property(address, f"device,{found.instance}", "object-list"))
    except ErrorRejectAbortNack:
        # Too long for one unsegmented answer: read it element by element.
        count = int(await app.read_property(address, f"device,{found.instance}", "object-list", array_index=0))
        object_ids = [await app.read_property(address, f"device,{found.instance}", "object-list", array_index=i)
                      for i in range(1, count + 1)]
    wanted = [oid for oid in object_ids if str(oid[0]) in POINT_TYPES and tuple(oid) != device_id]
    for start in range(0, len(wanted), NAME_BATCH):
        batch = wanted[start:start + NAME_BATCH]
        request: list[Any] = []
        for oid in batch:
            request += [oid, ["object-name", "units"]]
        answer = await app.read_property_multiple(address, request)
        names: dict[Any, str] = {}
        units: dict[Any, str] = {}
        for oid, prop, _index, value in answer or []:
            if hasattr(value, "errorCode") or value is None:
                continue
            if str(prop) == "object-name":
                names[tuple(oid)] = str(value)
            elif str(prop) == "units":
                units[tuple(oid)] = unit_string(str(value))
        for oid in batch:
            key = tuple(oid)
            text = f"{oid[0]},{oid[1]}"
            found.objects.append(FoundObject(text, names.get(key, text), units.get(key, "")))


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str, fallback: str, sep: str = "_") -> str:
    """A plant-file name (letters, digits, C{_}/C{-}) from a BACnet object or device name."""
    cleaned = _SLUG.sub(sep, text.lower()).strip(sep)[:64]
    return cleaned or fallback


def _toml(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def plant_section(
    devices: Sequence[FoundDevice], *, source: str, local_address: str, interval: float = 10.0,
) -> str:
    """A plant file serving every object found: one unit per device, one point per object."""
    lines = [
        f"# Written by `python -m hvac_push.sources.bacnet discover` on {time.strftime('%Y-%m-%d %H:%M:%S')}:",
        f"# {len(devices)} device(s), {sum(len(d.objects) for d in devices)} point(s). Edit names, units and the interval freely.",
        "",
        f"[bacnet.{source}]",
        f"address = {_toml(local_address)}",
        f"interval = {interval:g}",
    ]
    used_units: set[str] = set()
    for device in devices:
        lines.append("")
        if device.problem:
            lines.append(f"# device {device.instance} at {device.address}: could not be read ({device.problem})")
            continue
        unit_key = slug(device.name, f"device-{device.instance}", sep="-")
        if unit_key in used_units:
            unit_key = f"{unit_key}-{device.instance}"
        used_units.add(unit_key)
        lines += [
            f"# device {device.instance} at {device.address}",
            f"[units.{unit_key}]",
            f"name = {_toml(device.name)}",
            f"source = {_toml('bacnet.' + source)}",
            "",
            f"[units.{unit_key}.points]",
        ]
        used_points: set[str] = set()
        for obj in device.objects:
            key = slug(obj.name, obj.object.replace(",", "_").replace("-", "_"))
            if key in used_points:
                key = f"{key}_{obj.object.split(',')[1]}"
            used_points.add(key)
            fields = [f"device = {device.instance}", f"address = {_toml(device.address)}", f"object = {_toml(obj.object)}"]
            if obj.unit:
                fields.append(f"unit = {_toml(obj.unit)}")
            fields.append(f"name = {_toml(obj.name)}")
            lines.append(f"{key} = {{ {', '.join(fields)} }}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str], out: Callable[[str], None] = print, err: Callable[[str], None] | None = None) -> int:
    """The command line; returns the exit status."""
    def error(line: str) -> None:
        (err or (lambda s: print(s, file=sys.stderr)))(line)

    parser = argparse.ArgumentParser(prog="python -m hvac_push.sources.bacnet")
    commands = parser.add_subparsers(dest="command", required=True)
    find = commands.add_parser("discover", help="find devices and print a plant-file section")
    find.add_argument("--address", default="0.0.0.0:47808",
                      help="local interface A.B.C.D[/PREFIX][:PORT] (default 0.0.0.0:47808); "
                           "the printed [bacnet] table uses it too")
    find.add_argument("--target", help="send Who-Is to this HOST:PORT only (unicast)")
    find.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for I-Am answers (default 3)")
    find.add_argument("--source", default="field", help="name of the [bacnet.NAME] table to print (default field)")
    find.add_argument("--interval", type=float, default=10.0, help="poll interval to print (default 10)")
    args = parser.parse_args(argv)
    try:
        parse_ip_address(args.address)
        if args.target is not None:
            parse_ip_address(args.target, prefix=False)
        if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$", args.source):
            raise DiscoveryError(f"--source {args.source!r}: use letters, digits, '_', '.' or '-'")
        if not 0 < args.timeout <= 600 or not 0 < args.interval <= 3600:
            raise DiscoveryError("--timeout and --interval must be positive")
        devices = asyncio.run(discover(args.address, args.target, args.timeout))
    except (ValueError, DiscoveryError, PortInUse) as e:
        error(f"discover: {e}")
        return 2
    if not devices:
        error(f"discover: no device answered Who-Is within {args.timeout:g}s")
        return 1
    out(plant_section(devices, source=args.source, local_address=args.address, interval=args.interval))
    return 0


__all__ = ["DiscoveryError", "FoundDevice", "FoundObject", "discover", "main", "plant_section", "slug"]
