"""Which collectors are alive, from their retained online state and MQTT last will.

A collector (L{hvac_push.ops.cluster.MqttBridge}) publishes, retained, on
C{<prefix>/_nodes/<node>}: C{{"online": true}} once connected, and sets
C{{"online": false}} as its last will (the broker publishes it when the
collector's connection drops without a goodbye: at once when its process dies,
within 1.5x its keepalive when its machine or network does) and publishes it
itself when it stops. Every point payload it sends names its node
(C{"node": ...}).

On an edge, L{NodeLiveness} remembers which points each node feeds and the
status each payload carried; while a node is offline its points are C{down}
(the source of their data is lost: docs/protocol.md, Status), whatever order the
retained messages arrive in; when it is back they take their payload status
again. All of it runs in paho's network thread.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Callable, Sequence

from hvac_push.core.points import Sample, Status, is_name
from hvac_push.sources.common import PointStates

NODES_LEVEL = "_nodes"
MAX_NODES = 1000


def node_topic(prefix: str, node: str) -> str:
    """Where a collector's online state is published."""
    return f"{prefix}/{NODES_LEVEL}/{node}"


def online_payload(online: bool) -> bytes:
    return json.dumps({"online": online}).encode("ascii")


class NodeLiveness:
    """The online state of each collector under one prefix, and the points each one feeds."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.filter = node_topic(prefix, "+")
        self._offline: set[str] = set()
        self._points: dict[str, set[str]] = defaultdict(set)
        #: point id -> (node, the status its payload carried)
        self._payload: dict[str, tuple[str, Status]] = {}

    def node_of(self, topic: str) -> str | None:
        """The node a liveness topic is about, or L{None} when C{topic} is not one."""
        head, _, node = topic.rpartition("/")
        return node if head == f"{self.prefix}/{NODES_LEVEL}" and is_name(node) else None

    def offline(self, node: str) -> bool:
        return node in self._offline

    def down_points(self) -> set[str]:
        """The points of every node that is offline now."""
        return {p for node in self._offline for p in self._points.get(node, ())}

    def status_of(self, point_id: str, node: str | None, status: Status) -> Status:
        """Remember which node feeds C{point_id}; the status to show for a payload carrying C{status}."""
        if node is None:
            return status
        previous = self._payload.get(point_id)
        if previous is not None and previous[0] != node:
            self._points[previous[0]].discard(point_id)
        if node in self._points or len(self._points) < MAX_NODES:
            self._points[node].add(point_id)
            self._payload[point_id] = (node, status)
        return "down" if node in self._offline else status

    def update(
        self, node: str, payload: bytes, states: PointStates, publish: Callable[[Sequence[Sample]], None]
    ) -> None:
        """A node's online state arrived: mark its points C{down}, or give them their payload status back."""
        try:
            online = json.loads(payload.decode("utf-8")).get("online") is True
        except (ValueError, AttributeError, UnicodeDecodeError):
            return  # not ours: ignored (an empty payload clears a retained state)
        points = sorted(self._points.get(node, ()))
        if not online:
            if node not in self._offline and len(self._offline) < MAX_NODES:
                self._offline.add(node)
            states.mark(publish, points, "down")
            return
        self._offline.discard(node)
        by_status: dict[Status, list[str]] = defaultdict(list)
        for point_id in points:
            by_status[self._payload[point_id][1]].append(point_id)
        for status, ids in by_status.items():
            states.mark(publish, ids, status)


__all__ = ["NODES_LEVEL", "NodeLiveness", "node_topic", "online_payload"]
