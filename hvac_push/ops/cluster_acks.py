"""Operators' alarm actions travel between nodes: an ack or shelve on one node is applied on every other.

Every node evaluates alarms itself, from the same values and the same limits
(L{hvac_push.sources.mqtt_meta}), so the alarms are the same everywhere; what
an operator does to one of them must be too. L{AckRelay} listens to its
node's alarm engine: an acknowledgement, shelve or unshelve done by someone
(the transition has C{by}) is published on C{<prefix>/_acks} (QoS 1, not
retained: an action, not a state) as

    {"alarm": "plant/ahu-1/supply_temp:high", "action": "ack", "by": "alice", "comment": "...",
     "minutes": 15, "origin": "<this relay's id>"}

and every relay applies the actions of the others to its own engine, with
the same C{by} and C{comment} (their journals agree). An action for an alarm
a node does not list is ignored there. paho runs in its own thread; actions
are applied on the reactor.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from hvac_push.analytics.alarms import Alarm, AlarmEngine
from hvac_push.sources.mqtt_client import Failover, make_client

log = Logger(namespace="hvac_push.ops.cluster_acks")
ACKS_LEVEL = "_acks"
MAX_ACTION = 4096


class AckRelay(Service):
    """Publishes this node's operator alarm actions and applies the other nodes' (one per node)."""

    def __init__(self, alarms: AlarmEngine, reactor: Any, link: Any, *, reconnect_min: float = 0.5,
                 reconnect_max: float = 10.0):
        super().__init__()
        self.setName("mqtt-acks")
        self.alarms = alarms
        self.reactor = reactor
        self.link = link
        self.topic = f"{link.prefix}/{ACKS_LEVEL}"
        self.origin = uuid.uuid4().hex
        self.reconnect_min, self.reconnect_max = reconnect_min, reconnect_max
        self._client: Any = None
        self._failover = Failover(link.broker)
        #: True while applying another node's action (its transition is not sent back).
        self._applying = False
        self.sent = 0
        self.applied = 0
        self.connected = False
        #: alarm id -> its last listed state here (to tell an unshelve or the ack of a returned alarm).
        self._states: dict[str, str] = {a.id: a.state for a in alarms.alarms.values()}
        alarms.add_listener(self._transition)

    def startService(self) -> None:
        super().startService()
        client = self._client = make_client(self.link.broker, reconnect_min=self.reconnect_min,
                                            reconnect_max=self.reconnect_max)
        client.on_connect = self._on_connect
        client.on_connect_fail = lambda c, u: self._lost(c)
        client.on_disconnect = lambda c, u, f, rc, p: self._lost(c)
        client.on_message = self._on_message
        client.connect_async(*self._failover.current, self.link.keepalive)
        client.loop_start()

    def stopService(self) -> Any:
        super().stopService()
        client, self._client = self._client, None
        if client is None:
            return None

        def stop() -> None:
            client.disconnect()
            client.loop_stop()

        from twisted.internet.threads import deferToThreadPool

        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), stop)

    # -- reactor thread ------------------------------------------------------

    def _transition(self, seq: int, alarm: Alarm) -> None:
        before = self._states.pop(alarm.id, "normal")
        if alarm.state != "normal":
            self._states[alarm.id] = alarm.state
        if self._applying or alarm.by is None or self._client is None:
            return
        if alarm.state == "shelved":
            action = "shelve"
        elif before == "shelved":
            action = "unshelve"
        elif alarm.state == "acknowledged" or (alarm.state == "normal" and before in ("returned", "latched")):
            action = "ack"
        else:
            return
        doc: dict[str, Any] = {"alarm": alarm.id, "action": action, "by": alarm.by, "comment": alarm.comment,
                               "origin": self.origin}
        if action == "shelve" and alarm.shelved_until is not None:
            doc["minutes"] = max(0.0, (alarm.shelved_until - self.alarms.clock.seconds()) / 60.0)
        self._client.publish(self.topic, json.dumps(doc).encode("utf-8"), qos=1)
        self.sent += 1

    def _apply(self, doc: dict[str, Any]) -> None:
        alarm_id, action, by, comment = doc["alarm"], doc["action"], doc.get("by"), doc.get("comment")
        self._applying = True
        try:
            if action == "ack":
                self.alarms.ack(alarm_id, by=by, comment=comment)
            elif action == "shelve":
                self.alarms.shelve(alarm_id, float(doc.get("minutes") or 0), by=by, comment=comment)
            elif action == "unshelve":
                self.alarms.unshelve(alarm_id, by=by, comment=comment)
            self.applied += 1
        except (KeyError, ValueError) as e:
            log.debug("alarm action from another node not applied here: {e}", e=e)
        finally:
            self._applying = False

    # -- paho's thread -------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            return
        self.connected = True
        client.subscribe(self.topic, 1)

    def _lost(self, client: Any) -> None:
        self.connected = False
        self._failover.lost(client)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            if len(message.payload) > MAX_ACTION:
                return
            doc = json.loads(message.payload.decode("utf-8"))
            if not isinstance(doc, dict) or doc.get("origin") == self.origin:
                return
            if not isinstance(doc.get("alarm"), str) or doc.get("action") not in ("ack", "shelve", "unshelve"):
                return
            self.reactor.callFromThread(self._apply, doc)
        except Exception:
            log.failure("alarm action from another node: cannot read it")


__all__ = ["AckRelay"]
