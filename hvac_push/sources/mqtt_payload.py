"""Payload mapping for MQTT: pick a point's value, unit and time out of the messages devices really send.

Field devices rarely publish one bare number per topic. Zigbee2MQTT, Tasmota
and Shelly publish a JSON object with several readings; others publish
C{ON}/C{OFF} or C{21.5 °C}. A L{PayloadMap}, declared per source or per point
in the plant file, says how to read them:

  - C{json_path}: where the value is in a JSON object (L{parse_path}), so one
    message feeds several points (C{temperature}, C{ENERGY.Power},
    C{switch:0.apower}, C{params["switch:0"].apower}, C{sensors[1].value});
  - C{unit_path}, C{ts_path}: the unit and the time, picked the same way;
  - C{value_map}: text states to values (C{ON} -> true), a declared table or
    a built-in one (L{BUILTIN_MAPS}).

A text value that is a number followed by a unit (C{"21.5 °C"}) becomes the
number, with that unit. A mapping that does not fit a message raises
L{BadMapping} with a reason (counted in /metrics) and a one-line explanation.
Pure functions and frozen values: safe in paho's thread.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Mapping

from hvac_push.core.points import InvalidPoint, Value, check_value

#: A C{ts} above this is taken to be in milliseconds (it is year 5138 in seconds).
MS_THRESHOLD = 1e11
MAX_PATH = 256
MAX_DEPTH = 16
MAX_MAP = 256

#: The value maps a plant file can name instead of writing a table (keys compare ignoring case).
BUILTIN_MAPS: dict[str, dict[str, Value]] = {
    "on_off": {"on": True, "off": False},
    "open_closed": {"open": True, "closed": False},
    "yes_no": {"yes": True, "no": False},
}

#: Reasons a mapping does not fit a message (the C{reason} label of C{hvacpush_source_errors}).
PATH_MISSING = "path_missing"
VALUE_UNMAPPED = "value_unmapped"
BAD_VALUE = "bad_value"

_SEGMENT = re.compile(r"[^.\[\]\"'\s]+")
_INDEX = re.compile(r"\[(?:(\d{1,6})|\"([^\"\\]*)\"|'([^'\\]*)')\]")
_NUMBER_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\s\d.+\-][^\d]{0,31}?)?\s*$")

Step = str | int


class BadMapping(ValueError):
    """A message the mapping does not fit; C{reason} is one of the reasons above."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@lru_cache(maxsize=4096)
def parse_path(text: str) -> tuple[Step, ...]:
    """The steps of a path: C{a.b}, C{a[0]}, C{a["key.with.dots"]}, C{switch:0.apower}.

    A step is an object key, or a list index in brackets. Raises L{ValueError}
    saying what is wrong: the path is checked when the plant file is loaded.
    """
    if not text:
        raise ValueError("must not be empty")
    if len(text) > MAX_PATH:
        raise ValueError(f"longer than {MAX_PATH} characters")
    steps: list[Step] = []
    at = 0
    expect_key = True
    while at < len(text):
        index = _INDEX.match(text, at)
        if index is not None:
            number, double, single = index.groups()
            steps.append(int(number) if number is not None else double if double is not None else single)
            at = index.end()
            expect_key = False
            continue
        if text[at] == "." and not expect_key and steps:
            at += 1
            expect_key = True
            if at == len(text):
                raise ValueError(f"{text!r} ends with '.'")
            continue
        segment = _SEGMENT.match(text, at)
        if segment is None or not expect_key:
            raise ValueError(
                f"{text!r}: unexpected {text[at]!r} at {at + 1} "
                "(write keys with '.', indexes as [0], odd keys as [\"key\"])"
            )
        steps.append(segment.group())
        at = segment.end()
        expect_key = False
    if len(steps) > MAX_DEPTH:
        raise ValueError(f"deeper than {MAX_DEPTH} steps")
    return tuple(steps)


def check_path(text: str) -> str | None:
    """What is wrong with a path, or L{None}."""
    try:
        parse_path(text)
    except ValueError as e:
        return str(e)
    return None


def pick(doc: Any, steps: tuple[Step, ...], shown: str) -> Any:
    """The part of C{doc} at C{steps}; raises L{BadMapping} (C{path_missing}) when there is none."""
    here = doc
    for depth, step in enumerate(steps):
        if isinstance(step, int) and isinstance(here, list) and step < len(here):
            here = here[step]
        elif isinstance(step, str) and isinstance(here, dict) and step in here:
            here = here[step]
        else:
            where = "the payload" if depth == 0 else f"step {depth}"
            kind = "not a JSON object" if not isinstance(here, (dict, list)) else "no such key or index"
            raise BadMapping(PATH_MISSING, f"path {shown!r} matches nothing: {where} has {kind} for {step!r}")
    return here


def number_with_unit(text: str) -> tuple[int | float, str] | None:
    """C{(21.5, "°C")} for C{"21.5 °C"}, C{(7, "")} for C{"7"}; L{None} for other text."""
    match = _NUMBER_UNIT.match(text)
    if match is None:
        return None
    raw, unit = match.group(1), (match.group(2) or "").strip()
    number: int | float = int(raw) if re.fullmatch(r"[-+]?\d+", raw) else float(raw)
    if isinstance(number, float) and not math.isfinite(number):
        return None
    return number, unit


def parse_ts(raw: Any, shown: str = "ts") -> float:
    """Epoch seconds from a number (seconds, or milliseconds above 10^11) or an ISO 8601 text.

    An ISO time without a zone is taken as UTC. Raises L{BadMapping} (C{bad_value}).
    """
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw) and raw > 0:
        return float(raw) / 1000.0 if raw > MS_THRESHOLD else float(raw)
    if isinstance(raw, str) and len(raw) <= 64:
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            return when.timestamp()
    raise BadMapping(BAD_VALUE, f"{shown} {raw!r:.40} is not a time (epoch seconds or milliseconds, or ISO 8601)")


def map_key(value: Any) -> str | None:
    """The text a value map looks up for a payload value (case folded); L{None} for objects and lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return value.strip().casefold()
    return None


@dataclass(frozen=True, slots=True)
class PayloadMap:
    """How to read one point out of a message; the default reads the plain payloads of L{hvac_push.sources.mqtt}.

    C{value_map} is a tuple of C{(case-folded text, value)} pairs, so the whole
    map stays hashable and comparable (a plant reload compares them). An empty
    path is "none here": it overrides a source's default without picking anything.
    """

    json_path: str | None = None
    unit_path: str | None = None
    ts_path: str | None = None
    value_map: tuple[tuple[str, Value], ...] | None = None

    @property
    def plain(self) -> bool:
        return not (self.json_path or self.unit_path or self.ts_path) and self.value_map is None

    def merged(self, defaults: "PayloadMap") -> "PayloadMap":
        """This map, each unset field taken from C{defaults} (a source's defaults under a point's own keys)."""
        return PayloadMap(
            self.json_path if self.json_path is not None else defaults.json_path,
            self.unit_path if self.unit_path is not None else defaults.unit_path,
            self.ts_path if self.ts_path is not None else defaults.ts_path,
            self.value_map if self.value_map is not None else defaults.value_map,
        )


def make_value_map(table: Mapping[str, Value]) -> tuple[tuple[str, Value], ...]:
    """A L{PayloadMap.value_map} from a table; raises L{ValueError} when two keys differ only in case."""
    seen: dict[str, str] = {}
    pairs = []
    for text, value in table.items():
        key = text.strip().casefold()
        if key in seen:
            raise ValueError(f"{seen[key]!r} and {text!r} are the same key (keys compare ignoring case)")
        seen[key] = text
        pairs.append((key, check_value(value)))
    return tuple(pairs)


def decode(payload: bytes) -> Any:
    """The payload as JSON when it is JSON, else as text (C{ON}, C{21.5 °C}); raises L{BadMapping} for non UTF-8."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadMapping(BAD_VALUE, "payload is not UTF-8") from None

    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(text, parse_constant=no_constants)
    except ValueError:
        return text.strip()


@dataclass(frozen=True, slots=True)
class Reading:
    """What a mapping read out of one message; C{ts} and C{unit} are L{None} when it carries none."""

    value: Value
    ts: float | None
    unit: str | None


def read(mapping: PayloadMap, doc: Any) -> Reading:
    """Apply C{mapping} to a decoded payload (L{decode}); raises L{BadMapping}."""
    #: The plain C{{"value", "ts", "unit"}} object: its time and unit count unless paths say otherwise.
    plain_object = not mapping.json_path and isinstance(doc, dict) and "value" in doc
    if mapping.json_path:
        raw = pick(doc, parse_path(mapping.json_path), mapping.json_path)
    elif plain_object:
        raw = doc["value"]
    else:
        raw = doc
    unit: str | None = None
    if mapping.unit_path:
        found = pick(doc, parse_path(mapping.unit_path), mapping.unit_path)
        if not isinstance(found, str) or len(found) > 32:
            raise BadMapping(BAD_VALUE, f"unit at {mapping.unit_path!r} is not a text of at most 32 characters")
        unit = found
    elif plain_object and isinstance(doc.get("unit"), str) and len(doc["unit"]) <= 32:
        unit = doc["unit"]
    ts: float | None = None
    if mapping.ts_path:
        ts = parse_ts(pick(doc, parse_path(mapping.ts_path), mapping.ts_path), f"time at {mapping.ts_path!r}")
    elif plain_object and doc.get("ts") is not None:
        ts = parse_ts(doc["ts"], "ts")
    value: Any
    if mapping.value_map is not None:
        key = map_key(raw)
        table = dict(mapping.value_map)
        if key is None or key not in table:
            known = ", ".join(k for k, _ in mapping.value_map[:8])
            raise BadMapping(VALUE_UNMAPPED, f"value {_shown(raw)} is not in the value map ({known})")
        value = table[key]
    elif isinstance(raw, str):
        parsed = number_with_unit(raw)
        if parsed is None:
            if not mapping.json_path:
                raise BadMapping(BAD_VALUE, f"text {_shown(raw)} is not a number (declare a value_map for text states)")
            value = raw
        else:
            value, suffix = parsed
            if suffix and unit is None:
                unit = suffix
    else:
        value = raw
    if value is None or isinstance(value, (dict, list)):
        raise BadMapping(BAD_VALUE, f"value {_shown(raw)} is not a number, true/false or a text")
    try:
        return Reading(check_value(value), ts, unit)
    except InvalidPoint as e:
        raise BadMapping(BAD_VALUE, str(e)) from None


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = [
    "BAD_VALUE", "BUILTIN_MAPS", "PATH_MISSING", "VALUE_UNMAPPED", "BadMapping", "PayloadMap", "Reading",
    "check_path", "decode", "make_value_map", "number_with_unit", "parse_path", "parse_ts", "pick", "read",
]
