"""A Sparkplug B edge node for tests: paho-mqtt 2.x and the project's own sparkplug_b_pb2 module.

It births (NBIRTH with bdSeq and Node Control/Rebirth, then a DBIRTH per
device), sends alias-only DDATA, dies per device (DDEATH) or as a whole (its
MQTT will, NDEATH, when its socket is cut), and answers rebirth requests (NCMD)
by birthing again, as Sparkplug 3.0 asks. Blocking: call it in a thread.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from hvac_push.sources import sparkplug_b_pb2 as pb


@dataclass
class Metric:
    name: str
    alias: int
    datatype: int
    value: Any
    unit: str = ""


def _set_value(metric: Any, datatype: int, value: Any) -> None:
    metric.datatype = datatype
    if datatype in (pb.Int8, pb.Int16, pb.Int32, pb.UInt8, pb.UInt16, pb.UInt32):
        metric.int_value = value & 0xFFFFFFFF
    elif datatype in (pb.Int64, pb.UInt64, pb.DateTime):
        metric.long_value = value & 0xFFFFFFFFFFFFFFFF
    elif datatype == pb.Float:
        metric.float_value = value
    elif datatype == pb.Double:
        metric.double_value = value
    elif datatype == pb.Boolean:
        metric.boolean_value = value
    else:
        metric.string_value = value


class EdgeNode:
    def __init__(self, port: int, group: str, node: str, node_metrics: list[Metric], devices: dict[str, list[Metric]]):
        self.port = port
        self.group = group
        self.node = node
        self.node_metrics = node_metrics
        self.devices = devices
        self.seq = 0
        self.bdseq = 0
        self.rebirth_requests = 0
        self.births = 0
        self._client: Any = None
        self._lock = threading.Lock()

    def topic(self, kind: str, device: str | None = None) -> str:
        return f"spBv1.0/{self.group}/{kind}/{self.node}" + (f"/{device}" if device else "")

    def _payload(self, metrics: list[tuple[Metric, bool]], seq: bool = True) -> bytes:
        """C{metrics}: (metric, full) pairs; full metrics carry name and alias (births), others the alias only."""
        payload = pb.Payload(timestamp=int(time.time() * 1000))
        if seq:
            payload.seq = self.seq
            self.seq = (self.seq + 1) % 256
        for metric, full in metrics:
            m = payload.metrics.add()
            if full:
                m.name = metric.name
            m.alias = metric.alias
            _set_value(m, metric.datatype, metric.value)
            if full and metric.unit:
                m.properties.keys.append("engUnit")
                value = m.properties.values.add()
                value.type = pb.String
                value.string_value = metric.unit
        return payload.SerializeToString()

    def _death(self) -> bytes:
        payload = pb.Payload(timestamp=int(time.time() * 1000))
        m = payload.metrics.add()
        m.name = "bdSeq"
        m.datatype = pb.Int64
        m.long_value = self.bdseq
        return payload.SerializeToString()

    def start(self) -> None:
        """A new MQTT session (bdSeq + 1), with NDEATH as its will, then the births."""
        from paho.mqtt.client import Client, MQTTv311
        from paho.mqtt.enums import CallbackAPIVersion

        self.bdseq += 1
        client = Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{self.node}-{self.bdseq}", protocol=MQTTv311)
        client.will_set(self.topic("NDEATH"), self._death(), qos=1)
        connected = threading.Event()
        client.on_connect = lambda *args: connected.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", self.port, keepalive=30)
        client.loop_start()
        if not connected.wait(5):
            raise TimeoutError("the edge node could not connect")
        client.subscribe(self.topic("NCMD"), qos=1)
        self._client = client
        time.sleep(0.2)  # let the subscription settle
        self.birth()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        payload = pb.Payload.FromString(message.payload)
        if any(m.name == "Node Control/Rebirth" and m.boolean_value for m in payload.metrics):
            self.rebirth_requests += 1
            # Not in paho's thread: waiting there for the PUBACKs would block the loop that reads them.
            threading.Thread(target=self.birth, daemon=True).start()

    def _send(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(5)

    def birth(self) -> None:
        with self._lock:
            self.seq = 0
            rebirth = Metric("Node Control/Rebirth", 0, pb.Boolean, False)
            bdseq = pb.Payload.FromString(self._death()).metrics[0]
            payload = pb.Payload.FromString(self._payload([(m, True) for m in [rebirth, *self.node_metrics]]))
            payload.metrics.add().CopyFrom(bdseq)
            self._send(self.topic("NBIRTH"), payload.SerializeToString())
            for device, metrics in self.devices.items():
                self._send(self.topic("DBIRTH", device), self._payload([(m, True) for m in metrics]))
            self.births += 1

    def data(self, device: str | None, values: dict[int, Any]) -> None:
        """DDATA (NDATA without a device) carrying only aliases and values."""
        with self._lock:
            metrics = self.devices[device] if device else self.node_metrics
            changed = []
            for metric in metrics:
                if metric.alias in values:
                    metric.value = values[metric.alias]
                    changed.append((metric, False))
            self._send(self.topic("DDATA" if device else "NDATA", device), self._payload(changed))

    def device_death(self, device: str) -> None:
        with self._lock:
            self._send(self.topic("DDEATH", device), self._payload([]))

    def skip(self, count: int) -> None:
        """Lose C{count} messages: the next one shows a sequence gap."""
        with self._lock:
            self.seq = (self.seq + count) % 256

    def kill(self) -> None:
        """Cut the TCP connection without DISCONNECT: the broker publishes the will (NDEATH)."""
        client, self._client = self._client, None
        if client is None:
            return
        sock = client.socket()
        client.loop_stop()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
