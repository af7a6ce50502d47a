"""What BACnet words mean here: object types, addresses, engineering units and point status.

Pure tables and parsers, without bacpypes3, so the plant file checker and the
BACnet producer share one home for them (docs/sources.md prints the same tables).
"""

from __future__ import annotations

import re
from typing import Iterable

from hvac_push.core.points import Status

DEFAULT_PORT = 47808
#: The largest device or object instance; 4194303 is the wildcard.
MAX_INSTANCE = 4194302

#: Object types whose properties carry a single value a point can show.
OBJECT_TYPES = (
    "accumulator",
    "analog-input",
    "analog-output",
    "analog-value",
    "averaging",
    "binary-input",
    "binary-output",
    "binary-value",
    "characterstring-value",
    "device",
    "integer-value",
    "large-analog-value",
    "loop",
    "multi-state-input",
    "multi-state-output",
    "multi-state-value",
    "positive-integer-value",
    "pulse-converter",
)

#: BACnet engineering units (bacpypes3's names) -> the unit string points carry.
UNITS: dict[str, str] = {
    "degrees-celsius": "°C",
    "degrees-fahrenheit": "°F",
    "degrees-kelvin": "K",
    "delta-degrees-fahrenheit": "Δ°F",
    "delta-degrees-kelvin": "ΔK",
    "percent": "%",
    "percent-relative-humidity": "%RH",
    "parts-per-million": "ppm",
    "watts": "W",
    "kilowatts": "kW",
    "megawatts": "MW",
    "watt-hours": "Wh",
    "kilowatt-hours": "kWh",
    "megawatt-hours": "MWh",
    "kilovolt-amperes": "kVA",
    "btus-per-hour": "BTU/h",
    "kilo-btus-per-hour": "kBTU/h",
    "tons-refrigeration": "TR",
    "joules": "J",
    "kilojoules": "kJ",
    "megajoules": "MJ",
    "pascals": "Pa",
    "kilopascals": "kPa",
    "bars": "bar",
    "pounds-force-per-square-inch": "psi",
    "inches-of-water": "inH2O",
    "cubic-meters-per-hour": "m³/h",
    "cubic-meters-per-second": "m³/s",
    "cubic-feet-per-minute": "cfm",
    "liters-per-second": "l/s",
    "liters-per-minute": "l/min",
    "liters-per-hour": "l/h",
    "us-gallons-per-minute": "gpm",
    "kilograms-per-hour": "kg/h",
    "cubic-meters": "m³",
    "liters": "l",
    "meters-per-second": "m/s",
    "feet-per-minute": "fpm",
    "volts": "V",
    "millivolts": "mV",
    "amperes": "A",
    "milliamperes": "mA",
    "hertz": "Hz",
    "revolutions-per-minute": "rpm",
    "seconds": "s",
    "minutes": "min",
    "hours": "h",
    "luxes": "lx",
    "no-units": "",
}


def unit_string(engineering_units: str) -> str:
    """The unit string for a BACnet engineering unit; unknown ones keep their BACnet name."""
    return UNITS.get(engineering_units, engineering_units)


#: What a device reports about a point, worst first, and the point status each means.
#: The first condition present wins; with none, the point is C{ok}.
STATUS_RULES: tuple[tuple[str, Status], ...] = (
    ("no-answer", "fault"),  # the device does not answer (timeouts, or not found by Who-Is)
    ("read-error", "fault"),  # unknown object or property, refused or aborted request, bad value
    ("fault", "fault"),  # status-flags: fault
    ("unreliable", "fault"),  # reliability other than no-fault-detected
    ("out-of-service", "stale"),  # status-flags: the value is not the live process value
    ("overridden", "ok"),  # status-flags: overridden by a local hand switch; still the real value
    ("in-alarm", "ok"),  # status-flags: in alarm; the value itself is good
)
STATUS_FLAGS = ("in-alarm", "fault", "overridden", "out-of-service")


def point_status(conditions: Iterable[str]) -> Status:
    """The point status for a set of conditions, by L{STATUS_RULES}."""
    present = set(conditions)
    for condition, status in STATUS_RULES:
        if condition in present:
            return status
    return "ok"


_IPV4 = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:/(\d{1,2}))?(?::(\d{1,5}))?$")


def parse_ip_address(text: str, *, prefix: bool = True) -> tuple[str, int | None, int]:
    """C{"A.B.C.D[/PREFIX][:PORT]"} -> (host, prefix or None, port); raises C{ValueError} saying what is wrong."""
    match = _IPV4.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        shape = "A.B.C.D[/PREFIX][:PORT]" if prefix else "A.B.C.D[:PORT]"
        raise ValueError(f"expected an IPv4 address like {shape!r}, got {text!r}")
    octets = [int(g) for g in match.groups()[:4]]
    if any(o > 255 for o in octets):
        raise ValueError(f"bad IPv4 address {text!r}")
    mask = match.group(5)
    if mask is not None and (not prefix or int(mask) > 32):
        raise ValueError(f"bad prefix in {text!r}" if prefix else f"a device address takes no prefix: {text!r}")
    port = int(match.group(6)) if match.group(6) is not None else DEFAULT_PORT
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535 in {text!r}")
    return ".".join(map(str, octets)), int(mask) if mask is not None else None, port


def has_broadcast(address: str) -> bool:
    """Whether a local interface address has a subnet broadcast address (a /PREFIX below 31) for Who-Is."""
    prefix = parse_ip_address(address)[1]
    return prefix is not None and prefix < 31


def parse_object(text: str) -> tuple[str, int]:
    """C{"analog-input,1"} -> ("analog-input", 1); raises C{ValueError} with a did-you-mean hint."""
    import difflib

    if not isinstance(text, str) or text.count(",") != 1:
        raise ValueError(f"expected TYPE,INSTANCE such as 'analog-input,1', got {text!r}")
    kind, _, number = (part.strip() for part in text.partition(","))
    if kind not in OBJECT_TYPES:
        hint = difflib.get_close_matches(kind, OBJECT_TYPES, n=1)
        suffix = f" (did you mean '{hint[0]}'?)" if hint else f"; one of {', '.join(OBJECT_TYPES)}"
        raise ValueError(f"unknown object type {kind!r}{suffix}")
    if not number.isdigit() or not 0 <= int(number) <= MAX_INSTANCE:
        raise ValueError(f"object instance must be a number from 0 to {MAX_INSTANCE}, got {number!r}")
    return kind, int(number)


_PROPERTY = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


def check_property(text: str) -> str:
    """A property name in BACnet's spelling (C{present-value}); raises C{ValueError} otherwise."""
    if not isinstance(text, str) or not _PROPERTY.match(text) or len(text) > 64:
        raise ValueError(f"expected a property name like 'present-value', got {text!r}")
    return text


__all__ = [
    "DEFAULT_PORT",
    "MAX_INSTANCE",
    "OBJECT_TYPES",
    "STATUS_FLAGS",
    "STATUS_RULES",
    "UNITS",
    "check_property",
    "has_broadcast",
    "parse_ip_address",
    "parse_object",
    "point_status",
    "unit_string",
]
