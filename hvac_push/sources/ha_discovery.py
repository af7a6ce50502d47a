"""Home Assistant MQTT discovery: points from the config messages sites already publish for Home Assistant.

Zigbee2MQTT, Tasmota, Shelly, ESPHome and many gateways announce each entity
with a retained JSON message on C{PREFIX/COMPONENT/[NODE/]OBJECT/config}
giving its name, state topic, unit and a value template. L{parse_entity}
turns one into an L{Entity}: a point (C{SITE/NODE/OBJECT}) fed by the state
topic through a L{PayloadMap}, so such a site needs no point list.

Only a small, safe subset of Home Assistant's Jinja templates is understood
(L{template_path}): C{{{ value }}}, C{{{ value_json.a.b }}},
C{{{ value_json['key'] }}}, optionally followed by C{| float}, C{| int} or
C{| round(N)}, which are accepted and leave the value as the device sends it.
Anything else is refused with a reason (nothing is ever evaluated).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hvac_push.core.points import is_name
from hvac_push.sources.mqtt_payload import PayloadMap, check_path, make_value_map, map_key

DEFAULT_PREFIX = "homeassistant"
MAX_CONFIG = 16384

#: Home Assistant's abbreviations of the keys read here (a discovery message may use either).
ABBREVIATIONS = {
    "stat_t": "state_topic", "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template",
    "uniq_id": "unique_id", "obj_id": "object_id", "pl_on": "payload_on", "pl_off": "payload_off",
    "stat_on": "state_on", "stat_off": "state_off", "dev": "device", "avty_t": "availability_topic",
    "pl_avail": "payload_available", "pl_not_avail": "payload_not_available", "ids": "identifiers",
    "avty": "availability", "t": "topic",
}
#: Components whose state is on/off text.
_BINARY = ("binary_sensor", "switch", "fan", "light", "siren", "lock")

_TEMPLATE = re.compile(
    r"^\{\{\s*(value_json(?P<path>(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\s*(?:\d+|'[^'\\]*'|\"[^\"\\]*\")\s*\])+)|value)"
    r"(?P<filters>(?:\s*\|\s*(?:float|int|round\(\s*\d{1,2}\s*\)|float\(\s*[-\d.]*\s*\)|int\(\s*[-\d]*\s*\)))*)"
    r"\s*\}\}$"
)
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.\-]+")


class BadDiscovery(ValueError):
    """A discovery message that cannot become a point; the text says why."""


@dataclass(frozen=True, slots=True)
class HaDiscovery:
    """Settings of discovery on one broker: the topic prefix, and the site of the points it creates."""

    prefix: str = DEFAULT_PREFIX
    site: str = "plant"

    def filters(self) -> list[str]:
        return [f"{self.prefix}/+/+/config", f"{self.prefix}/+/+/+/config"]

    def parts(self, topic: str) -> tuple[str, str | None, str] | None:
        """C{(component, node or None, object)} of a discovery config topic; L{None} for any other topic."""
        head = self.prefix + "/"
        if not topic.startswith(head) or not topic.endswith("/config"):
            return None
        levels = topic[len(head):-len("/config")].split("/")
        if len(levels) == 2:
            return levels[0], None, levels[1]
        if len(levels) == 3:
            return levels[0], levels[1], levels[2]
        return None


@dataclass(frozen=True, slots=True)
class Entity:
    """A discovered point: its id, state topic, unit and how to read the state; plus its name and availability."""

    point_id: str
    topic: str
    unit: str
    payload: PayloadMap
    name: str
    #: C{(topic, payload when online, payload when offline)}, when the device announces one.
    availability: tuple[str, str, str] | None = None


def slug(text: str) -> str:
    """A point-id level made of C{text}: other characters become C{_}, at most 64."""
    cleaned = _NOT_NAME.sub("_", text).strip("_.-")[:64] or "_"
    return cleaned if is_name(cleaned) else "_" + cleaned[:63]


def template_path(template: str) -> str | None:
    """The JSON path a value template reads (L{None} for C{{{ value }}}); raises L{BadDiscovery}."""
    match = _TEMPLATE.match(template.strip())
    if match is None:
        shown = template if len(template) <= 60 else template[:57] + "..."
        raise BadDiscovery(f"value_template {shown!r} is not in the supported subset "
                           "({{ value }}, {{ value_json.key }}, {{ value_json['key'] }}, | float, | int, | round(N))")
    raw = match.group("path")
    if raw is None:
        return None
    path = ""
    for step in re.findall(r"\.[A-Za-z_][A-Za-z0-9_]*|\[[^\]]*\]", raw):
        if step.startswith("."):
            path += step if path else step[1:]
        else:
            inner = step[1:-1].strip()
            path += "[" + (inner if inner.isdigit() else json.dumps(inner[1:-1])) + "]"
    if problem := check_path(path):
        raise BadDiscovery(f"value_template reads {path!r}: {problem}")
    return path


def _expanded(config: dict[str, Any]) -> dict[str, Any]:
    full = {ABBREVIATIONS.get(k, k): v for k, v in config.items()}
    base = full.get("~")
    if isinstance(base, str):
        for key, value in full.items():
            if key.endswith("_topic") and isinstance(value, str):
                if value.startswith("~"):
                    full[key] = base + value[1:]
                elif value.endswith("~"):
                    full[key] = value[:-1] + base
    device = full.get("device")
    if isinstance(device, dict):
        full["device"] = {ABBREVIATIONS.get(k, k): v for k, v in device.items()}
    return full


def _text(config: dict[str, Any], key: str, default: str, limit: int = 256) -> str:
    value = config.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or len(str(value)) > limit:
        raise BadDiscovery(f"{key!r} must be a text of at most {limit} characters")
    return str(value)


def _state(config: dict[str, Any], key: str, default: str) -> str:
    """A state payload as a value map key: Zigbee2MQTT gives C{true}/C{false} as JSON bools."""
    value = config.get(key)
    return map_key(value) or default if isinstance(value, bool) else _text(config, key, default)


def parse_entity(settings: HaDiscovery, topic: str, payload: bytes) -> Entity | None:
    """The point a discovery message announces; L{None} for an empty message (the entity was removed).

    Raises L{BadDiscovery} saying what is wrong.
    """
    parts = settings.parts(topic)
    if parts is None:
        raise BadDiscovery("not a discovery config topic")
    if not payload:
        return None
    if len(payload) > MAX_CONFIG:
        raise BadDiscovery(f"config larger than {MAX_CONFIG} bytes")
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadDiscovery("config is not a JSON object") from None
    if not isinstance(raw, dict):
        raise BadDiscovery("config is not a JSON object")
    config = _expanded(raw)
    component, node, object_id = parts
    state_topic = config.get("state_topic")
    if not isinstance(state_topic, str) or not state_topic or "+" in state_topic or "#" in state_topic:
        raise BadDiscovery(f"{component} has no exact state_topic (an entity without one has no value to show)")
    device = config.get("device") if isinstance(config.get("device"), dict) else {}
    assert isinstance(device, dict)
    device_name = _text(device, "name", "")
    unit_level = slug(node) if node is not None else slug(device_name) if device_name else "ha"
    point_id = f"{settings.site or 'plant'}/{unit_level}/{slug(object_id)}"
    unit = _text(config, "unit_of_measurement", "", 32)
    name = _text(config, "name", "") or device_name or object_id
    if device_name and not name.startswith(device_name):  # as Home Assistant shows it
        name = f"{device_name} {name}"
    template = config.get("value_template")
    path = template_path(template) if isinstance(template, str) else None
    value_map = None
    if component in _BINARY:
        on = _state(config, "state_on", _state(config, "payload_on", "ON"))
        off = _state(config, "state_off", _state(config, "payload_off", "OFF"))
        try:
            value_map = make_value_map({on: True, off: False})
        except ValueError as e:
            raise BadDiscovery(f"payload_on and payload_off: {e}") from None
    availability = None
    avty = config.get("availability_topic")
    listed = config.get("availability")
    if avty is None and isinstance(listed, list) and listed and isinstance(listed[0], dict):
        first: dict[str, Any] = {ABBREVIATIONS.get(str(k), str(k)): v for k, v in listed[0].items()}
        avty = first.get("topic")
        config = {**config, **{k: v for k, v in first.items() if k.startswith("payload_")}}
    if isinstance(avty, str) and avty and "+" not in avty and "#" not in avty:
        availability = (avty, _text(config, "payload_available", "online"),
                        _text(config, "payload_not_available", "offline"))
    return Entity(point_id, state_topic, unit, PayloadMap(path, value_map=value_map), name[:200], availability)


__all__ = ["ABBREVIATIONS", "DEFAULT_PREFIX", "BadDiscovery", "Entity", "HaDiscovery", "parse_entity", "slug",
           "template_path"]
