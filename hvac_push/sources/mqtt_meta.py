"""Point metadata between nodes: what an edge needs besides values (names, intervals, units, alarm limits).

A collector (L{hvac_push.ops.cluster.MqttBridge}) publishes, retained, on
C{<prefix>/_meta/<site>/<unit>/<point>}, whenever it changes:

    {"name": "Supply air", "interval": 2.0, "unit": "°C",
     "limits": {"high": 28.0, "low": 12.0, "deadband": 0.5, "delay": 10, "severity": "major", ...}}

An edge's MQTT source hands each one to C{on_point_meta} (paho's thread);
L{hvac_push.ops.cluster.edge_meta} applies it unless the edge configures that
point itself, so every edge evaluates the same limits on the same values and
raises the same alarms (docs/deployment.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

from hvac_push.core.points import SEVERITIES, AlarmLimits, PointMeta, check_point_id

META_LEVEL = "_meta"
MAX_META_PAYLOAD = 4096


@dataclass(frozen=True, slots=True)
class TravellingMeta:
    """What a collector says about one point."""

    name: str = ""
    interval: float | None = None
    unit: str = ""
    limits: AlarmLimits | None = None


def meta_topic(prefix: str, point_id: str) -> str:
    return f"{prefix}/{META_LEVEL}/{point_id}"


def meta_payload(meta: PointMeta, unit: str) -> bytes:
    """The retained document for a point's metadata (compact JSON)."""
    doc: dict[str, Any] = {"name": meta.name, "interval": meta.expected_interval, "unit": unit}
    if meta.limits is not None:
        doc["limits"] = asdict(meta.limits)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_meta(payload: bytes) -> TravellingMeta:
    """The metadata in a payload; raises C{ValueError} saying what is wrong."""
    if len(payload) > MAX_META_PAYLOAD:
        raise ValueError(f"metadata larger than {MAX_META_PAYLOAD} bytes")
    doc = json.loads(payload.decode("utf-8"))
    if not isinstance(doc, dict):
        raise ValueError("metadata must be a JSON object")
    name, unit, interval = doc.get("name") or "", doc.get("unit") or "", doc.get("interval")
    if not isinstance(name, str) or not isinstance(unit, str) or len(name) > 200 or len(unit) > 32:
        raise ValueError("name and unit must be short strings")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float))
                                 or not interval > 0 or not math.isfinite(interval)):
        raise ValueError("interval must be a positive number of seconds")
    raw = doc.get("limits")
    limits = None
    if raw is not None:
        if not isinstance(raw, dict):
            raise ValueError("limits must be a JSON object")
        known = {f.name for f in fields(AlarmLimits)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown limit {sorted(unknown)[0]!r}")
        for key in ("high", "low", "deadband", "delay", "delay_normal"):
            value = raw.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ValueError(f"limit {key} must be a number")
        if raw.get("severity", "major") not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        limits = AlarmLimits(**raw)
    return TravellingMeta(name, float(interval) if interval is not None else None, unit, limits)


class MetaChannel:
    """The edge side: which topics carry metadata, and where each one goes."""

    def __init__(self, prefix: str, on_point_meta: Callable[[str, TravellingMeta], None] | None = None):
        self.prefix = prefix
        self.filter = f"{prefix}/{META_LEVEL}/+/+/+"
        self.on_point_meta = on_point_meta

    def point_of(self, topic: str) -> str | None:
        """The point a metadata topic is about, or L{None} when C{topic} is not one."""
        head = f"{self.prefix}/{META_LEVEL}/"
        if not topic.startswith(head):
            return None
        try:
            return check_point_id(topic[len(head):])
        except ValueError:
            return None

    def handle(self, point_id: str, payload: bytes) -> None:
        """Raises C{ValueError} for a payload that is not metadata."""
        meta = parse_meta(payload)
        if self.on_point_meta is not None:
            self.on_point_meta(point_id, meta)


__all__ = ["META_LEVEL", "MetaChannel", "TravellingMeta", "meta_payload", "meta_topic", "parse_meta"]
