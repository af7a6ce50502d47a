"""Sparkplug B host side: edge nodes' births, data, deaths and rebirth requests, as points.

Sparkplug B (Eclipse Sparkplug 3.0) edge nodes publish protobuf payloads
(L{hvac_push.sources.sparkplug_b_pb2}, compiled from C{proto/sparkplug_b.proto})
on C{spBv1.0/GROUP/TYPE/NODE[/DEVICE]}:

  - C{NBIRTH}/C{DBIRTH} name every metric with its alias, type and value;
    L{SparkplugHost} declares a point per metric (C{SITE/NODE/METRIC} and
    C{SITE/NODE.DEVICE/METRIC}; the site is the group id unless configured);
  - C{NDATA}/C{DDATA} carry changed metrics, usually by alias alone;
  - C{DDEATH}/C{NDEATH} (the node's MQTT will) make the device's or the whole
    node's points C{down}, keeping their last values;
  - every message but C{NDEATH} carries a sequence number 0..255; a gap, data
    before a birth or an unknown alias means the host has lost track, so it
    asks the node to publish its births again: an C{NCMD} with the metric
    C{Node Control/Rebirth} = true (at most once per L{REBIRTH_HOLDOFF} seconds).

L{SparkplugHost.handle} is pure bookkeeping: it returns an L{Outcome} (samples,
points to declare or mark down, commands to publish, problems to count) and
the MQTT source does the I/O. One thread only (paho's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from google.protobuf.message import DecodeError

from hvac_push.core.points import InvalidPoint, Sample, Value, check_value
from hvac_push.sources import sparkplug_b_pb2 as pb
from hvac_push.sources.ha_discovery import slug
from hvac_push.sources.sparkplug_settings import SparkplugSettings

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"
#: Seconds between two rebirth requests to the same node.
REBIRTH_HOLDOFF = 2.0
MAX_METRICS_PER_NODE = 10_000

#: Reasons counted in /metrics (C{hvacpush_source_errors_total{reason=...}}).
MALFORMED = "malformed"
SEQ_GAP = "sparkplug_seq_gap"
UNKNOWN_METRIC = "sparkplug_unknown_metric"
NOT_BORN = "sparkplug_not_born"
BAD_VALUE = "bad_value"

_SIGNED_BITS = {pb.Int8: 8, pb.Int16: 16, pb.Int32: 32, pb.Int64: 64}


@dataclass
class Outcome:
    """What one message means for the source: it publishes, declares, marks and counts accordingly."""

    samples: list[Sample] = field(default_factory=list)
    declare: list[tuple[str, str]] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    down: list[str] = field(default_factory=list)
    #: C{(topic, payload)} to publish (rebirth requests).
    commands: list[tuple[str, bytes]] = field(default_factory=list)
    #: C{(reason, explanation)} of what was wrong.
    problems: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Metric:
    point_id: str
    unit: str
    datatype: int


@dataclass
class _Node:
    group: str
    name: str
    born: bool = False
    seq: int | None = None
    bdseq: int | None = None
    #: (device or None, alias) and (device or None, name) -> metric.
    metrics: dict[tuple[str | None, int | str], _Metric] = field(default_factory=dict)
    #: device (None: the node itself) -> its point ids.
    points: dict[str | None, set[str]] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)
    asked_at: float | None = None


def metric_value(metric: Any) -> Value | None:
    """The value of a metric as a point value; L{None} for a null; raises L{ValueError} for what a point cannot carry."""
    if metric.is_null:
        return None
    kind = metric.WhichOneof("value")
    if kind is None:
        return None
    bits = _SIGNED_BITS.get(metric.datatype)
    value: Any
    if kind == "int_value" or kind == "long_value":
        value = getattr(metric, kind)
        if bits is not None:  # two's complement in an unsigned field
            value &= (1 << bits) - 1
            if value >= 1 << (bits - 1):
                value -= 1 << bits
    elif kind == "float_value":
        value = float(f"{metric.float_value:.7g}")  # what a float32 really carries
    elif kind in ("double_value", "boolean_value", "string_value"):
        value = getattr(metric, kind)
    else:
        raise ValueError(f"a {kind.replace('_value', '')} value cannot be a point")
    try:
        return check_value(value)
    except InvalidPoint as e:
        raise ValueError(str(e)) from None


def _unit(metric: Any) -> str:
    """The metric's engineering unit, from its C{engUnit} (or C{engUnits}) property."""
    props = metric.properties
    for key, value in zip(props.keys, props.values):
        if key in ("engUnit", "engUnits") and value.WhichOneof("value") == "string_value":
            return str(value.string_value)[:32]
    return ""


def rebirth_request(group: str, node: str, now_ms: int) -> tuple[str, bytes]:
    """The NCMD that asks an edge node to publish its births again."""
    payload = pb.Payload(timestamp=now_ms)
    metric = payload.metrics.add()
    metric.name = REBIRTH
    metric.datatype = pb.Boolean
    metric.boolean_value = True
    return f"{NAMESPACE}/{group}/NCMD/{node}", payload.SerializeToString()


class SparkplugHost:
    """Follows the edge nodes of some groups and turns their messages into L{Outcome}s."""

    def __init__(self, settings: SparkplugSettings = SparkplugSettings(), clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._clock = clock
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.rebirths_requested = 0

    def filters(self) -> list[str]:
        group = self.settings.group
        return [f"{NAMESPACE}/{group}/+/+", f"{NAMESPACE}/{group}/+/+/+"]

    @staticmethod
    def handles(topic: str) -> bool:
        return topic.startswith(NAMESPACE + "/")

    def point_ids(self) -> set[str]:
        """Every point the host has declared (they wait for a birth after a broker outage, not for the broker)."""
        return {pid for node in self.nodes.values() for ids in node.points.values() for pid in ids}

    def reconnected(self) -> Outcome:
        """After a new MQTT session: the host may have missed anything, so every known node is asked to rebirth."""
        out = Outcome()
        for node in self.nodes.values():
            node.born, node.seq, node.asked_at = False, None, None
            self._ask_rebirth(node, out, "reconnected")
        return out

    def handle(self, topic: str, payload: bytes) -> Outcome:
        out = Outcome()
        levels = topic.split("/")
        if len(levels) not in (4, 5) or levels[0] != NAMESPACE:
            return out  # STATE and anything else that is not an edge node's
        _, group, kind, node_name = levels[:4]
        device = levels[4] if len(levels) == 5 else None
        if kind in ("NCMD", "DCMD"):
            return out  # commands: ours, or another host's
        try:
            message = pb.Payload.FromString(payload)
        except DecodeError as e:
            out.problems.append((MALFORMED, f"not a Sparkplug B payload: {e}"))
            return out
        key = (group, node_name)
        node = self.nodes.get(key)
        if kind == "NBIRTH":
            node = self.nodes[key] = _Node(group, node_name, points=node.points if node else {})
            node.born = True
            node.seq = message.seq if message.HasField("seq") else 0
            for metric in message.metrics:
                if metric.name == BDSEQ and metric.WhichOneof("value") in ("long_value", "int_value"):
                    node.bdseq = int(getattr(metric, str(metric.WhichOneof("value"))))
            self._birth(node, None, message, out)
            return out
        if node is None:
            node = self.nodes[key] = _Node(group, node_name)
        if kind == "NDEATH":
            bdseq = next((int(getattr(m, str(m.WhichOneof("value")))) for m in message.metrics
                          if m.name == BDSEQ and m.WhichOneof("value") in ("long_value", "int_value")), None)
            if bdseq is not None and node.bdseq is not None and bdseq != node.bdseq:
                return out  # the will of an older session: this one is alive
            node.born, node.seq = False, None
            node.devices.clear()
            out.down.extend(sorted({pid for ids in node.points.values() for pid in ids}))
            return out
        if kind not in ("DBIRTH", "NDATA", "DDATA", "DDEATH"):
            out.problems.append((MALFORMED, f"unknown message type {kind!r}"))
            return out
        if not node.born:
            out.problems.append((NOT_BORN, f"{kind} from {group}/{node_name} before its NBIRTH"))
            self._ask_rebirth(node, out, "no birth")
            return out
        self._check_seq(node, message, kind, out)
        if kind in ("DBIRTH", "DDATA", "DDEATH") and device is None:
            out.problems.append((MALFORMED, f"{kind} without a device id in the topic"))
            return out
        if kind == "DBIRTH":
            assert device is not None
            node.devices.add(device)
            for k in [k for k in node.metrics if k[0] == device]:
                del node.metrics[k]
            self._birth(node, device, message, out)
        elif kind == "DDEATH":
            assert device is not None
            node.devices.discard(device)
            out.down.extend(sorted(node.points.get(device, ())))
        else:
            if kind == "DDATA" and device not in node.devices:
                out.problems.append((NOT_BORN, f"DDATA from {group}/{node_name}/{device} before its DBIRTH"))
                self._ask_rebirth(node, out, "no device birth")
                return out
            self._data(node, device if kind == "DDATA" else None, message, out)
        return out

    # -- the parts ----------------------------------------------------------------------

    def _site(self, group: str) -> str:
        return self.settings.site or slug(group)

    def _check_seq(self, node: _Node, message: Any, kind: str, out: Outcome) -> None:
        if not message.HasField("seq"):
            return
        seq = int(message.seq)
        expected = None if node.seq is None else (node.seq + 1) % 256
        node.seq = seq
        if expected is not None and seq != expected:
            out.problems.append((SEQ_GAP, f"{kind} from {node.group}/{node.name}: seq {seq}, expected {expected}"))
            self._ask_rebirth(node, out, "seq gap")

    def _ask_rebirth(self, node: _Node, out: Outcome, why: str) -> None:
        now = self._clock()
        if node.asked_at is not None and now - node.asked_at < REBIRTH_HOLDOFF:
            return
        node.asked_at = now
        self.rebirths_requested += 1
        out.commands.append(rebirth_request(node.group, node.name, int(time.time() * 1000)))

    def _birth(self, node: _Node, device: str | None, message: Any, out: Outcome) -> None:
        unit_level = slug(node.name if device is None else f"{node.name}.{device}")
        site = self._site(node.group)
        ids = node.points.setdefault(device, set())
        for metric in message.metrics:
            name = metric.name
            if not name or name == BDSEQ or name.startswith("Node Control/"):
                continue
            if len(node.metrics) >= MAX_METRICS_PER_NODE:
                out.problems.append((BAD_VALUE, f"{node.group}/{node.name}: more than {MAX_METRICS_PER_NODE} metrics"))
                break
            point_id = f"{site}/{unit_level}/{slug(name.replace('/', '.'))}"
            known = _Metric(point_id, _unit(metric), int(metric.datatype))
            node.metrics[(device, name)] = known
            if metric.HasField("alias"):
                node.metrics[(device, int(metric.alias))] = known
            ids.add(point_id)
            out.declare.append((point_id, known.unit))
            out.names[point_id] = name
            self._sample(known, metric, message, out)

    def _data(self, node: _Node, device: str | None, message: Any, out: Outcome) -> None:
        for metric in message.metrics:
            known = None
            if metric.HasField("alias"):
                known = node.metrics.get((device, int(metric.alias)))
            if known is None and metric.name:
                known = node.metrics.get((device, metric.name))
            if known is None:
                what = f"alias {metric.alias}" if metric.HasField("alias") else f"metric {metric.name!r}"
                where = node.name if device is None else f"{node.name}/{device}"
                out.problems.append((UNKNOWN_METRIC, f"{node.group}/{where}: {what} was not in its birth"))
                self._ask_rebirth(node, out, "unknown metric")
                continue
            self._sample(known, metric, message, out)

    def _sample(self, known: _Metric, metric: Any, message: Any, out: Outcome) -> None:
        if metric.is_historical:
            return  # a stored value sent late: not the point's current value
        if not metric.HasField("datatype"):
            metric.datatype = known.datatype  # data messages may leave the type to the birth
        try:
            value = metric_value(metric)
        except ValueError as e:
            out.problems.append((BAD_VALUE, f"{known.point_id}: {e}"))
            return
        if value is None:
            return  # a null: the point keeps waiting (or its last value)
        stamp = metric.timestamp if metric.HasField("timestamp") else message.timestamp if message.HasField(
            "timestamp") else None
        ts = stamp / 1000.0 if stamp else time.time()
        out.samples.append(Sample(known.point_id, value, known.unit, ts, "ok"))


__all__ = [
    "NAMESPACE", "REBIRTH", "Outcome", "SparkplugHost", "SparkplugSettings", "metric_value", "rebirth_request",
]
