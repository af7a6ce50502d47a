"""Collector side of a cluster: publish every hub change to an MQTT broker.

A collector node runs its local sources (simulator, Modbus, its own API) as
usual; L{MqttBridge} follows its hub and publishes each changed point to
C{<prefix>/<site>/<unit>/<point>}, retained, with QoS 1, as

    {"value": 6.8, "ts": 1764031234.5, "unit": "°C", "status": "ok", "name": "...", "interval": 2.0}

which the MQTT source of an edge node (L{hvac_push.sources.mqtt}) reads back
into the same point, status, display name and expected interval.

Threads: the hub is followed on the reactor thread, which only puts the newest
payload of each changed point into a bounded pending table (conflation: while
the broker is slow or down, a point that changes ten times is sent once, with
its newest value). paho runs its own network thread (C{loop_start}) and
reconnects with backoff; its callbacks only set flags and ask the reactor to
send more. Nothing is ever handed back into the hub.

After every (re)connection the bridge sends the newest payload of every point
it knows again, so a broker that restarted empty gets the whole state back.
Points fed by an MQTT source are never published (C{exclude}), so a node that
is both an edge and a collector does not echo what it receives.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from hvac_push.core.follow import HubFollower
from hvac_push.core.hub import Hub
from hvac_push.core.points import Point, PointMeta, is_name
from hvac_push.ops.service import PushService
from hvac_push.sources.mqtt import MqttProducer
from hvac_push.sources.mqtt_liveness import NodeLiveness, node_topic, online_payload
from hvac_push.sources.mqtt_meta import META_LEVEL, MetaChannel, TravellingMeta, meta_payload
from hvac_push.sources.mqtt_client import (
    Failover, MqttBroker, MqttTls, default_port, make_client, parse_addresses, redact_url,
)

DEFAULT_PREFIX = "hvac"
#: The longest reconnect delay towards a broker given several nodes: one of them is likely up,
#: and a cluster electing a leader refuses for seconds, so keep asking often.
CLUSTER_RECONNECT_MAX = 4.0
log = Logger(namespace="hvac_push.ops.cluster")


@dataclass(frozen=True, slots=True)
class BrokerLink:
    """A broker and the topic prefix under which nodes exchange points (C{--publish}, C{--subscribe})."""

    broker: MqttBroker
    prefix: str = DEFAULT_PREFIX
    #: This collector's name in its online state and payloads (C{?node=}; default: the host name).
    node: str = ""
    #: Seconds between MQTT pings (C{?keepalive=}): a collector whose machine vanishes is marked
    #: offline by its last will within 1.5x this (a crashed process at once).
    keepalive: int = 15
    #: The QoS of an edge's subscription (C{?qos=}): 1 by default; 0 needs no broker-side session state
    #: (NATS: no JetStream consumer), so a failover does not wait for the cluster to elect a leader.
    qos: int = 1

    @property
    def template(self) -> str:
        """The MQTT source's topic template for this prefix."""
        return f"{self.prefix}/{{site}}/{{unit}}/{{point}}"

    def describe(self) -> str:
        """The URL without the password, for logs."""
        return f"{self.broker.describe()}/{self.prefix}"


def parse_broker_url(text: str) -> BrokerLink:
    """Parse C{mqtt://[user[:pass]@]host[:port][,host2[:port]...][/prefix][?password_file=PATH]}, or C{mqtts://...[?ca=PATH&insecure=1]}.

    Several comma-separated hosts are the nodes of one clustered broker, tried in turn (L{Failover}).

    Raises C{ValueError} with a one-line reason, which repeats the URL with its password hidden.
    """
    shown = redact_url(text)
    try:
        parts = urlsplit(text)
    except ValueError as e:
        raise ValueError(f"{shown!r}: bad address ({e})") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"{shown!r}: expected mqtt://host[:port][/prefix] or mqtts://...")
    tls = parts.scheme == "mqtts"
    nodes = parts.netloc.rpartition("@")[2]
    if not nodes:
        raise ValueError(f"{shown!r}: no host")
    try:
        addresses = parse_addresses(nodes, default_port(tls))
    except ValueError as e:
        raise ValueError(f"{shown!r}: {e}") from None
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if any(c in prefix for c in "+#") or "//" in prefix:
        raise ValueError(f"{shown!r}: the prefix must be plain topic levels (no +, #, or empty level)")
    query = parse_qs(parts.query)
    unknown = set(query) - {"ca", "insecure", "password_file", "node", "keepalive", "qos"}
    if unknown:
        raise ValueError(
            f"{shown!r}: unknown parameter {sorted(unknown)[0]!r} (known: ca, insecure, password_file, node, keepalive, qos)"
        )
    qos_text = query.get("qos", ["1"])[-1]
    if qos_text not in ("0", "1"):
        raise ValueError(f"{shown!r}: qos must be 0 or 1")
    node = query["node"][-1] if "node" in query else default_node()
    if not is_name(node):
        raise ValueError(f"{shown!r}: node must be a name (letters, digits, '_', '.', '-')")
    keepalive_text = query.get("keepalive", ["15"])[-1]
    if not keepalive_text.isdigit() or not 5 <= int(keepalive_text) <= 3600:
        raise ValueError(f"{shown!r}: keepalive must be whole seconds from 5 to 3600")
    if ("ca" in query or "insecure" in query) and not tls:
        raise ValueError(f"{shown!r}: ca and insecure need mqtts://")
    password = unquote(parts.password) if parts.password is not None else None
    if "password_file" in query:
        if password is not None or not parts.username:
            raise ValueError(f"{shown!r}: password_file needs user@ and no password in the URL")
        path = query["password_file"][-1]
        try:
            with open(path, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as e:
            raise ValueError(f"password_file {path!r}: {e.strerror}") from None
    tls_options = MqttTls(
        ca=query["ca"][-1] if "ca" in query else None,
        insecure=query.get("insecure", ["0"])[-1] in ("1", "true", "yes"),
    )
    broker = MqttBroker(
        host=addresses[0][0],
        port=addresses[0][1],
        fallbacks=addresses[1:],
        username=unquote(parts.username) if parts.username else None,
        password=password,
        tls=tls_options if tls else None,
    )
    return BrokerLink(broker, prefix, node, int(keepalive_text), int(qos_text))


def default_node() -> str:
    """The host name, made a valid name: a collector's default C{node}."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:64].lstrip(".-") or "collector"
    return name


def topic_for(prefix: str, point_id: str) -> str:
    return f"{prefix}/{point_id}"


class MqttBridge(Service):
    """Publishes the hub's changes to one broker (retained, QoS 1), newest value per point."""

    def __init__(
        self,
        hub: Hub,
        reactor: Any,
        link: BrokerLink,
        *,
        client_id: str = "",
        keepalive: int | None = None,
        qos: int = 1,
        retain: bool = True,
        max_points: int = 100_000,
        max_inflight: int = 200,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        exclude: Callable[[str], bool] | None = None,
        name: str = "mqtt-publish",
    ):
        super().__init__()
        #: Unique per bridge: a collector may publish to several brokers (--publish repeated).
        self.setName(name)
        self.hub = hub
        self.reactor = reactor
        self.link = link
        self.client_id = client_id
        self.keepalive = keepalive or link.keepalive
        self.qos = qos
        self.retain = retain
        self.max_points = max_points
        self.max_inflight = max_inflight
        self.reconnect_min = reconnect_min
        self.reconnect_max = max(reconnect_min, reconnect_max)
        self.exclude = exclude
        self._lock = threading.Lock()
        #: point id -> newest payload not yet handed to paho (oldest change first).
        self._pending: OrderedDict[str, bytes] = OrderedDict()
        #: point id -> newest payload, for the full resend after a reconnection.
        self._last: dict[str, bytes] = {}
        self._inflight = 0
        self._drain_scheduled = False
        self._follower: HubFollower | None = None
        self._client: Any = None
        self._failover = Failover(link.broker)
        self._online_mid = -1
        #: Seconds without a single PUBACK while publishes are in flight before the node is given up.
        self.ack_timeout = 10.0
        self._progress_at = time.monotonic()
        self._watchdog: LoopingCall | None = None
        self.stalls = 0
        #: Counters (read from any thread).
        self.connected = False
        self.connects = 0
        #: Why the broker is not connected (refused, unreachable, lost), for /healthz; None once connected.
        self.last_error: str | None = "not connected yet"
        self._last_warned = float("-inf")
        self.published = 0
        self.acked = 0
        self.conflated = 0
        self.dropped = 0

    # -- reactor thread ------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._follower = HubFollower(self.hub, self._changed)
        for point in self.hub.points():
            self._changed(point)
        self._client = self._make_client()
        self._client.connect_async(*self._failover.current, self.keepalive)
        self._client.loop_start()
        self._watchdog = LoopingCall(self._check_acks)
        self._watchdog.clock = self.reactor
        self._watchdog.start(1.0, now=False)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None
        if self._follower is not None:
            self._follower.close()
            self._follower = None
        client, self._client = self._client, None
        with self._lock:
            self.connected = False
        if client is None:
            return None
        finished: Deferred[None] = Deferred()

        def stop_paho() -> None:
            # Off the reactor thread: loop_stop joins paho's thread, which may be waiting to reconnect.
            try:
                if client.is_connected():
                    # A goodbye: edges mark this collector's points down now, as its last will would.
                    client.publish(self.node_topic, online_payload(False), qos=1, retain=True).wait_for_publish(2.0)
                client.disconnect()
                client.loop_stop()
            finally:
                try:
                    self.reactor.callFromThread(_fire, finished)
                except Exception:
                    pass

        threading.Thread(target=stop_paho, name="hvac-push mqtt-publish stop", daemon=True).start()
        # Bounded: paho's thread is a daemon; do not hold shutdown for it.
        return finished.addTimeout(5.0, self.reactor, onTimeoutCancel=lambda result, timeout: None)

    def _changed(self, point: Point) -> None:
        if point.value is None or (self.exclude is not None and self.exclude(point.point_id)):
            return  # a declared point without a reading yet has nothing to relay
        payload = self.payload(point)
        point_id = point.point_id
        if point_id not in self._last and len(self._last) >= self.max_points:
            self.dropped += 1
            return
        # Its metadata (name, interval, unit, alarm limits), retained on <prefix>/_meta/<point>, when it
        # changed: ahead of the value, so edges judge the value with the limits it came with.
        meta_key = f"{META_LEVEL}/{point_id}"
        meta = meta_payload(self.hub.meta.get(point_id) or PointMeta(), point.unit)
        if self._last.get(meta_key) != meta:
            self._last[meta_key] = meta
            self._queue(meta_key, meta)
        self._last[point_id] = payload
        self._queue(point_id, payload)
        self._drain()

    def _queue(self, key: str, payload: bytes) -> None:
        with self._lock:
            if key in self._pending:
                self.conflated += 1
                del self._pending[key]
            self._pending[key] = payload

    def payload(self, point: Point) -> bytes:
        doc: dict[str, Any] = {
            "value": point.value, "ts": point.ts, "unit": point.unit, "status": point.status, "node": self.link.node,
        }
        meta = self.hub.meta.get(point.point_id)
        if meta is not None:
            if meta.name:
                doc["name"] = meta.name
            if meta.expected_interval:
                doc["interval"] = meta.expected_interval
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def _drain(self) -> None:
        """Hand pending payloads to paho while connected and under the in-flight bound."""
        self._drain_scheduled = False
        client = self._client
        if client is None:
            return
        batch: list[tuple[str, bytes]] = []
        with self._lock:
            if not self.connected:
                return
            room = self.max_inflight - self._inflight
            while room > 0 and self._pending:
                batch.append(self._pending.popitem(last=False))
                room -= 1
            if batch and self._inflight == 0:
                self._progress_at = time.monotonic()  # the ack timeout counts from the first one in flight
            self._inflight += len(batch)
        # Never call paho while holding our lock: paho calls on_publish holding its own.
        for point_id, payload in batch:
            client.publish(topic_for(self.link.prefix, point_id), payload, qos=self.qos, retain=self.retain)
        self.published += len(batch)

    def _schedule_drain(self, resend_all: bool = False) -> None:
        """From paho's thread: ask the reactor to send more (at most one request outstanding)."""
        with self._lock:
            if self._drain_scheduled and not resend_all:
                return
            self._drain_scheduled = True
        try:
            self.reactor.callFromThread(self._resend_all if resend_all else self._drain)
        except Exception:
            pass  # the reactor is gone

    def _resend_all(self) -> None:
        with self._lock:
            fresh = OrderedDict((k, v) for k, v in self._last.items() if k not in self._pending)
            fresh.update(self._pending)
            self._pending = fresh
        self._drain()

    @property
    def pending(self) -> int:
        """Points whose newest value is not yet handed to paho."""
        return len(self._pending)

    @property
    def idle(self) -> bool:
        """Connected, nothing pending and every publish acknowledged by the broker."""
        with self._lock:
            return self.connected and not self._pending and self._inflight == 0

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Ready while the broker takes what this collector publishes; the detail says why not otherwise."""
        return self.connected, {
            "broker": self.link.describe(), "connected": self.connected, "error": self.last_error,
            "points": len(self._last), "pending": len(self._pending), "published": self.published,
            "dropped": self.dropped,
        }

    # -- paho's thread -------------------------------------------------------

    def _make_client(self) -> Any:
        client = make_client(
            self.link.broker, client_id=self.client_id, reconnect_min=self.reconnect_min,
            reconnect_max=self.reconnect_max, max_inflight=self.max_inflight,
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.will_set(self.node_topic, online_payload(False), qos=1, retain=True)
        self._failover = Failover(self.link.broker)
        return client

    @property
    def node_topic(self) -> str:
        return node_topic(self.link.prefix, self.link.node)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._lost(f"connection refused: {reason_code}")
            return
        with self._lock:
            self.connected = True
            self._inflight = 0
            self.last_error = None
            self._progress_at = time.monotonic()
        self.connects += 1
        # Not counted in flight: paho queues it ahead of the points it then resends.
        self._online_mid = client.publish(self.node_topic, online_payload(True), qos=1, retain=True).mid
        log.info("mqtt publish: connected to {node} of {broker}", node=self._failover.describe(),
                 broker=self.link.describe())
        self._schedule_drain(resend_all=True)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._lost(f"cannot connect to {self._failover.describe()}")
        self._failover.lost(client)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._lost(f"connection to {self._failover.describe()} lost ({reason_code})")
        self._failover.lost(client)

    def _lost(self, why: str) -> None:
        with self._lock:
            was = self.connected
            self.connected = False
            self._inflight = 0
            # paho follows a refused login with a disconnect; the refusal is the reason worth showing.
            if was or not (self.last_error or "").startswith("connection refused"):
                self.last_error = why
        if not self.running:
            return
        if was:
            log.warn("mqtt publish: {broker}: {why}; holding the newest value of each point until it is back",
                     broker=self.link.describe(), why=why)
        elif time.monotonic() - self._last_warned >= 60.0:
            # A broker that refuses or cannot be reached is retried quietly: one line a minute.
            self._last_warned = time.monotonic()
            log.warn("mqtt publish: {broker}: {why}; retrying", broker=self.link.describe(), why=why)

    def _check_acks(self) -> None:
        """A node that takes publishes but never acknowledges them (a NATS node without a JetStream
        leader) is left: its socket is shut, and paho moves to the next node."""
        client = self._client
        with self._lock:
            stalled = self.connected and self._inflight > 0 and time.monotonic() - self._progress_at > self.ack_timeout
        if not stalled or client is None:
            return
        self.stalls += 1
        self._progress_at = time.monotonic()
        log.warn("mqtt publish: {node} acknowledged nothing for {timeout:g} s; trying the next node",
                 node=self._failover.describe(), timeout=self.ack_timeout)
        sock = client.socket()
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._progress_at = time.monotonic()
        if mid == self._online_mid:
            return
        with self._lock:
            self.acked += 1
            self._inflight = max(0, self._inflight - 1)
            more = bool(self._pending)
        if more:
            self._schedule_drain()


def _fire(d: Deferred[None]) -> None:
    if not d.called:
        d.callback(None)


def mqtt_fed(push: PushService) -> Callable[[str], bool]:
    """C{exclude} for L{MqttBridge}: true for points an MQTT source of C{push} has published."""
    def fed(point_id: str) -> bool:
        return any(isinstance(s.producer, MqttProducer) and point_id in s.point_ids for s in push.producers)

    return fed


def add_sync_readiness(push: PushService, name: str = "mqtt-sync") -> None:
    """Hold C{/healthz} at 503 until every MQTT source of C{push} has its initial state.

    It looks at C{push.producers} each time, so sources added by a config
    reload count too; once every source has synced it stays ready (a later
    broker outage shows as C{down} points, not as an unready node).
    """
    done = False

    def check() -> tuple[bool, Any]:
        nonlocal done
        sources = [s.producer for s in push.producers if hasattr(s.producer, "initial_sync")]
        if done:
            return True, f"{len(sources)} MQTT source(s) synced"
        results = [source.initial_sync() for source in sources]
        waiting = [detail for ok, detail in results if not ok]
        if waiting:
            return False, "; ".join(waiting)
        done = True
        return True, f"{len(sources)} MQTT source(s) synced"

    push.add_readiness_check(name, check)


def edge_meta(push: PushService) -> Callable[[str, str | None, float | None], None]:
    """C{on_meta} for an MQTT source: take a collector's name and interval unless configured here."""
    from dataclasses import replace

    from hvac_push.core.points import PointMeta

    seen: dict[str, tuple[str | None, float | None]] = {}
    lock = threading.Lock()

    def apply(point_id: str, name: str | None, interval: float | None) -> None:
        meta = push.hub.meta.get(point_id) or PointMeta()
        new = replace(meta, name=meta.name or name or "", expected_interval=meta.expected_interval or interval)
        if new != meta:
            push.hub.configure(point_id, new)

    def on_meta(point_id: str, name: str | None, interval: float | None) -> None:
        with lock:
            if seen.get(point_id) == (name, interval) or (point_id not in seen and len(seen) >= 100_000):
                return
            seen[point_id] = (name, interval)
        push.reactor.callFromThread(apply, point_id, name, interval)

    return on_meta


def edge_point_meta(push: PushService) -> Callable[[str, TravellingMeta], None]:
    """C{on_point_meta} for a C{--subscribe} link: a collector's names, intervals and alarm limits.

    What the edge configures itself wins; limits the edge took from a collector
    follow that collector's changes (and removal), so every edge evaluates the
    same limits and raises the same alarms.
    """
    from dataclasses import replace

    adopted: set[str] = set()

    def apply(point_id: str, travelling: TravellingMeta) -> None:
        meta = push.hub.meta.get(point_id) or PointMeta()
        limits = meta.limits
        if limits is None or point_id in adopted:
            limits = travelling.limits
            if limits is not None:
                adopted.add(point_id)
            else:
                adopted.discard(point_id)
        new = replace(meta, name=meta.name or travelling.name,
                      expected_interval=meta.expected_interval or travelling.interval, limits=limits)
        if new != meta:
            push.hub.configure(point_id, new)
            point = push.hub.get(point_id)
            alarms = getattr(push, "alarms", None)
            if point is not None and alarms is not None and new.limits != meta.limits:
                alarms.evaluate(point)  # limits that came after the value apply to it at once

    def on_point_meta(point_id: str, travelling: TravellingMeta) -> None:
        try:
            push.reactor.callFromThread(apply, point_id, travelling)
        except Exception:
            pass  # the reactor is gone

    return on_point_meta


def subscriber(link: BrokerLink, name: str = "mqtt") -> Any:
    """The MQTT source for C{--subscribe}: every point under the broker URL's prefix."""
    source = MqttProducer(
        name, link.broker, topic_template=link.template, discover=True, reconnect_min=0.5,
        reconnect_max=CLUSTER_RECONNECT_MAX if link.broker.fallbacks else 10.0, qos=link.qos,
    )
    source.liveness = NodeLiveness(link.prefix)
    source.meta_channel = MetaChannel(link.prefix)
    return source




def _reloader(service: PushService) -> Any:
    """The service's L{ConfigReloader} (C{--config}), if it has one."""
    try:
        return service.getServiceNamed("config-reloader")
    except KeyError:
        return None


def install_links(
    service: PushService, reactor: Any, *, subscribe: Sequence[BrokerLink] = (), publish: Sequence[BrokerLink] = (),
) -> None:
    """--subscribe (edge) and --publish (collector): a service's MQTT links to other nodes (docs/deployment.md).

    Every MQTT source then also takes point names and intervals from payloads,
    and the edge is held at 503 until the retained state is in (C{mqtt-sync});
    each --publish broker gets its own named bridge and health check.
    """
    for index, link in enumerate(subscribe):
        service.add_producer(subscriber(link, name=f"subscribe.{index + 1}"))
    mqtt_sources = [s.producer for s in service.producers if isinstance(s.producer, MqttProducer)]
    on_meta = edge_meta(service)
    on_point_meta = edge_point_meta(service)
    for source in mqtt_sources:
        source.on_meta = on_meta
        if source.meta_channel is not None:
            source.meta_channel.on_point_meta = on_point_meta
    reloader = _reloader(service)
    if reloader is not None:
        # A SIGHUP reload builds new MQTT sources: they must take names and intervals too.
        def wire(producer: Any) -> None:
            if isinstance(producer, MqttProducer):
                producer.on_meta = on_meta

        reloader.on_producer.append(wire)
    if mqtt_sources:
        add_sync_readiness(service)
    links = [*subscribe, *publish]
    if links and getattr(service, "alarms", None) is not None:
        # Operators' acks and shelves travel between nodes (docs/deployment.md, alarm state across edges).
        from hvac_push.ops.cluster_acks import AckRelay

        AckRelay(service.alarms, reactor, links[0]).setServiceParent(service)
    for index, link in enumerate(publish):
        name = f"mqtt-publish.{index + 1}"
        bridge = MqttBridge(service.hub, reactor, link, exclude=mqtt_fed(service), name=name,
                            reconnect_max=CLUSTER_RECONNECT_MAX if link.broker.fallbacks else 30.0)
        bridge.setServiceParent(service)
        service.add_readiness_check(name, bridge.health)

__all__ = [
    "install_links",
    "BrokerLink", "MqttBridge", "add_sync_readiness", "edge_meta", "mqtt_fed", "parse_broker_url", "subscriber",
]