"""MQTT source: subscribe to a broker with paho-mqtt 2.x and turn messages into samples.

Topics map to point ids through a template whose levels are literal names,
C{+}, or the placeholders C{{site}}, C{{unit}} and C{{point}}; the default
C{hvac/{site}/{unit}/{point}} maps C{hvac/plant/chiller-1/supply_temp} to
C{plant/chiller-1/supply_temp}. Declared points may name an exact topic instead.

Payloads are a bare JSON number or C{true}/C{false}, a number with a unit
(C{21.5 °C}), or a JSON object C{{"value": ..., "ts": ..., "unit": ...}}.
A point (or the whole source) may declare a L{PayloadMap} instead: a JSON path
into the object, a value map for text states (L{hvac_push.sources.mqtt_payload}),
and several points may share one topic, each picking its own part. Anything
else is counted by reason, logged at most once per topic per minute, and
dropped. An empty payload (how a retained message is cleared) is ignored.

paho runs its own network thread (C{loop_start}); every message is handed to
the reactor through the C{publish} callable. A broker given several addresses
(the nodes of a cluster) is tried node after node (L{Failover}). A connection
lost for longer than C{failover_grace} seconds makes the points this source
feeds C{down}; after reconnecting and resubscribing they are C{ok} again, and
retained messages bring fresh values. A failover that completes within the
grace changes no status (the hub's staleness check still watches the values).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

from hvac_push.core.points import STATUSES, InvalidPoint, Sample, Status, Value, check_point_id, check_value, is_name
from hvac_push.sources.common import PointStates, QuietLog, log
from hvac_push.sources.mqtt_client import Failover, MqttBroker, make_client
from hvac_push.sources.mqtt_liveness import NodeLiveness
from hvac_push.sources.mqtt_meta import MetaChannel
from hvac_push.sources.ha_discovery import BadDiscovery, Entity, HaDiscovery, parse_entity
from hvac_push.sources.mqtt_payload import BadMapping, PayloadMap, decode, number_with_unit, read
from hvac_push.sources.supervisor import count_error, declare_points, report_connection

if TYPE_CHECKING:
    from hvac_push.sources.sparkplug import Outcome
    from hvac_push.sources.sparkplug_settings import SparkplugSettings

DEFAULT_TEMPLATE = "hvac/{site}/{unit}/{point}"
MAX_PAYLOAD = 4096
#: Payloads read through a L{PayloadMap} may be larger: device status objects run to a few kB.
MAX_MAPPED_PAYLOAD = 65536
#: A C{ts} above this is taken to be in milliseconds (it is year 5138 in seconds).
_MS_THRESHOLD = 1e11
_MAX_TRACKED = 100_000
_PLACEHOLDERS = ("{site}", "{unit}", "{point}")


class BadPayload(ValueError):
    """A message payload that is not a value we understand."""


@dataclass(frozen=True, slots=True)
class MqttPoint:
    """A declared point: its id, an optional exact topic, its unit of measure, and how to read its payload."""

    point_id: str
    topic: str | None = None
    unit: str = ""
    payload: PayloadMap = PayloadMap()


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed payload; every field but C{value} is L{None} when the payload does not carry it.

    C{status}, C{name} and C{interval} are what an hvac-push collector
    (L{hvac_push.ops.cluster}) adds: the point's status at the source, its display
    name and the seconds between updates it promises.
    """

    value: Value
    ts: float | None = None
    unit: str | None = None
    status: Status | None = None
    name: str | None = None
    interval: float | None = None
    #: The collector that published it (L{hvac_push.sources.mqtt_liveness}).
    node: str | None = None


def parse_payload(payload: bytes) -> tuple[Value, float | None, str | None]:
    """C{(value, ts, unit)} from a payload; C{ts} and C{unit} are L{None} when absent.

    Raises L{BadPayload} saying what is wrong.
    """
    message = parse_message(payload)
    return message.value, message.ts, message.unit


def parse_message(payload: bytes) -> Message:
    """The whole L{Message} of a payload; raises L{BadPayload} saying what is wrong."""
    if len(payload) > MAX_PAYLOAD:
        raise BadPayload(f"payload larger than {MAX_PAYLOAD} bytes")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload("payload is not UTF-8") from None

    def no_constants(name: str) -> Any:
        raise BadPayload(f"{name} is not a value")

    try:
        doc = json.loads(text, parse_constant=no_constants)
    except BadPayload:
        raise
    except ValueError:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise BadPayload(f"not a number, true/false or JSON object: {shown!r}") from None
    ts: float | None = None
    unit: str | None = None
    status: Status | None = None
    name: str | None = None
    interval: float | None = None
    node: str | None = None
    if isinstance(doc, dict):
        if "value" not in doc:
            raise BadPayload("JSON object without \"value\"")
        value = doc["value"]
        if not isinstance(value, (bool, int, float, str)):
            raise BadPayload("\"value\" must be a number, true/false or a string")
        if "ts" in doc and doc["ts"] is not None:
            raw_ts = doc["ts"]
            if isinstance(raw_ts, bool) or not isinstance(raw_ts, (int, float)) or not raw_ts > 0:
                raise BadPayload("\"ts\" must be a positive number of epoch seconds")
            ts = float(raw_ts) / 1000.0 if raw_ts > _MS_THRESHOLD else float(raw_ts)
        if "unit" in doc and doc["unit"] is not None:
            if not isinstance(doc["unit"], str) or len(doc["unit"]) > 32:
                raise BadPayload("\"unit\" must be a string of at most 32 characters")
            unit = doc["unit"]
        if doc.get("status") is not None:
            if doc["status"] not in STATUSES:
                raise BadPayload(f"\"status\" must be one of {', '.join(STATUSES)}")
            status = next(s for s in STATUSES if s == doc["status"])
        if doc.get("name") is not None:
            if not isinstance(doc["name"], str) or len(doc["name"]) > 200:
                raise BadPayload("\"name\" must be a string of at most 200 characters")
            name = doc["name"]
        raw_interval = doc.get("interval")
        if raw_interval is not None:
            if isinstance(raw_interval, bool) or not isinstance(raw_interval, (int, float)) or not raw_interval > 0:
                raise BadPayload("\"interval\" must be a positive number of seconds")
            interval = float(raw_interval)
        if doc.get("node") is not None:
            if not isinstance(doc["node"], str) or not is_name(doc["node"]):
                raise BadPayload("\"node\" must be a name (letters, digits, '_', '.', '-')")
            node = doc["node"]
    elif isinstance(doc, (bool, int, float)):
        value = doc
    else:
        raise BadPayload("expected a number, true/false or a JSON object")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadPayload("value must be finite")
    try:
        return Message(check_value(value), ts, unit, status, name, interval, node)
    except InvalidPoint as e:
        raise BadPayload(str(e)) from None


def check_topic_template(template: str) -> str | None:
    """Return what is wrong with a topic template, or L{None} if it is fine.

    Each of C{{site}}, C{{unit}} and C{{point}} must fill one whole topic level,
    exactly once; other levels are literal names or the C{+} wildcard.
    """
    if not template:
        return None  # no template: only points with an explicit topic
    levels = template.split("/")
    seen: list[str] = []
    for level in levels:
        if level in _PLACEHOLDERS:
            if level in seen:
                return f"{level} appears twice"
            seen.append(level)
        elif level == "#":
            return "'#' is not allowed (each level must map to something)"
        elif "{" in level or "}" in level:
            return f"level {level!r}: placeholders must fill a whole level: {{site}}, {{unit}} or {{point}}"
        elif level != "+" and ("+" in level or "\0" in level):
            return f"level {level!r}: '+' must fill a whole level"
    missing = [p for p in _PLACEHOLDERS if p not in seen]
    if missing:
        return f"missing {', '.join(missing)}"
    return None


def check_topic(topic: str) -> str | None:
    """Return what is wrong with a point's own (exact) topic, or L{None} if it is fine."""
    if not topic:
        return "must not be empty"
    if "+" in topic or "#" in topic:
        return "must be an exact topic, without '+' or '#'"
    if "\0" in topic or len(topic.encode("utf-8")) > 65535:
        return "not a valid MQTT topic"
    return None


class TopicMap:
    """Which topics to subscribe to, and which point (and unit) a topic feeds."""

    def __init__(
        self, template: str, points: Sequence[MqttPoint] = (), discover: bool = True, payload: PayloadMap = PayloadMap(),
    ):
        self.template = template
        self.discover = discover
        #: How points found through the template read their payloads (the source's defaults).
        self.payload = payload
        self._levels = template.split("/") if template else []
        problem = check_topic_template(template)
        if problem is not None:
            raise ValueError(f"topic template {template!r}: {problem}")
        #: Exact topic -> the points it feeds (one message may feed several, each with its own path).
        self._exact: dict[str, list[MqttPoint]] = {}
        self._by_id: dict[str, MqttPoint] = {}
        for point in points:
            check_point_id(point.point_id)
            self._by_id[point.point_id] = point
            if point.topic is not None:
                problem = check_topic(point.topic)
                if problem is not None:
                    raise ValueError(f"{point.point_id}: topic {point.topic!r}: {problem}")
                self._exact.setdefault(point.topic, []).append(point)
            elif not template:
                raise ValueError(f"{point.point_id}: no topic and no topic template")
        self._templated = {pid for pid, p in self._by_id.items() if p.topic is None}

    @property
    def declared(self) -> list[str]:
        return list(self._by_id)

    def filters(self) -> list[str]:
        """The subscriptions: the template as a wildcard filter, plus each exact topic."""
        found: list[str] = []
        if self._levels and (self.discover or self._templated):
            found.append("/".join("+" if level in _PLACEHOLDERS else level for level in self._levels))
        found.extend(topic for topic in self._exact if not self._covered(topic, found))
        return found

    def _covered(self, topic: str, filters: list[str]) -> bool:
        levels = topic.split("/")
        for f in filters:
            parts = f.split("/")
            if len(parts) == len(levels) and all(p == "+" or p == t for p, t in zip(parts, levels)):
                return True
        return False

    def lookup(self, topic: str) -> tuple[str, str] | None:
        """C{(point_id, unit)} for a topic, L{None} if it feeds nothing.

        Raises L{InvalidPoint} when the topic fits the template but its levels
        do not make a valid point id.
        """
        found = self.routes(topic)
        return (found[0].point_id, found[0].unit) if found else None

    def routes(self, topic: str) -> list[MqttPoint]:
        """The points a topic feeds (several when they share an exact topic), in declaration order.

        Raises L{InvalidPoint} when the topic fits the template but its levels
        do not make a valid point id.
        """
        exact = self._exact.get(topic)
        if exact is not None:
            return exact
        levels = topic.split("/")
        if len(levels) != len(self._levels):
            return []
        parts: dict[str, str] = {}
        for want, got in zip(self._levels, levels):
            if want in _PLACEHOLDERS:
                parts[want] = got
            elif want != "+" and want != got:
                return []
        point_id = f"{parts['{site}']}/{parts['{unit}']}/{parts['{point}']}"
        declared = self._by_id.get(point_id)
        if declared is not None:
            # A point with its own topic is fed by that topic only.
            return [declared] if declared.topic is None else []
        if not self.discover:
            return []
        check_point_id(point_id)
        return [MqttPoint(point_id, None, "", self.payload)]

    def has(self, point_id: str) -> bool:
        """Whether the point is declared, or was added by L{add}."""
        return point_id in self._by_id

    def add(self, point: MqttPoint) -> bool:
        """Route an exact topic to one more point, found at run time (Home Assistant discovery).

        A point already declared keeps its declaration; returns whether the topic
        needs a new subscription.
        """
        if point.topic is None or point.point_id in self._by_id:
            return False
        check_point_id(point.point_id)
        if check_topic(point.topic) is not None:
            raise ValueError(f"{point.point_id}: topic {point.topic!r}: {check_topic(point.topic)}")
        self._by_id[point.point_id] = point
        new = point.topic not in self._exact
        self._exact.setdefault(point.topic, []).append(point)
        return new

    def remove(self, point_id: str) -> None:
        """Forget a point added at run time (its discovery config was deleted)."""
        point = self._by_id.pop(point_id, None)
        if point is None or point.topic is None:
            return
        left = [p for p in self._exact.get(point.topic, []) if p.point_id != point_id]
        if left:
            self._exact[point.topic] = left
        else:
            self._exact.pop(point.topic, None)


class MqttProducer:
    """Feeds points from one MQTT broker (QoS 1 subscriptions, clean session, auto-reconnect)."""

    def __init__(
        self,
        name: str,
        broker: MqttBroker,
        *,
        points: Sequence[MqttPoint] = (),
        topic_template: str = DEFAULT_TEMPLATE,
        discover: bool = True,
        payload: PayloadMap = PayloadMap(),
        homeassistant: HaDiscovery | None = None,
        sparkplug: SparkplugSettings | None = None,
        client_id: str = "",
        keepalive: int = 30,
        qos: int = 1,
        reconnect_min: float = 1.0,
        reconnect_max: float = 30.0,
        connect_timeout: float = 5.0,
        malformed_log_period: float = 60.0,
        failover_grace: float = 10.0,
    ):
        self.name = name
        self.broker = broker
        self.payload = payload
        #: Home Assistant MQTT discovery (L{hvac_push.sources.ha_discovery}), when enabled.
        self.homeassistant = homeassistant
        #: Sparkplug B edge nodes (L{hvac_push.sources.sparkplug}), when enabled.
        self.sparkplug = sparkplug
        #: Points created from discovery messages so far.
        self.discovered = 0
        #: Subscriptions to discovered state topics not yet acknowledged by the broker.
        self.subscriptions_pending = 0
        self.sparkplug_host: Any = None
        self.topics = TopicMap(
            topic_template, [replace(p, payload=p.payload.merged(payload)) for p in points], discover, payload,
        )
        self.client_id = client_id
        self.keepalive = keepalive
        self.qos = qos
        self.reconnect_min = reconnect_min
        self.reconnect_max = max(reconnect_min, reconnect_max)
        self.connect_timeout = connect_timeout
        self.failover_grace = failover_grace
        self._quiet = QuietLog(malformed_log_period)
        self._lock = threading.Lock()
        #: Counters, readable from any thread.
        self.received = 0
        self.malformed = 0
        self.malformed_by_topic: Counter[str] = Counter()
        #: Messages (or parts of messages) a payload mapping did not fit, by reason (L{mqtt_payload}).
        self.unread: Counter[str] = Counter()
        self.connected = False
        self.connects = 0
        #: Initial sync (see L{initial_sync}): seconds of silence from retained messages that end it.
        self.sync_quiet = 0.5
        #: ... or this many seconds after the first subscription, whichever comes first.
        self.sync_max = 10.0
        self.synced = False
        self._subscribed_at: float | None = None
        self._last_retained_at = 0.0
        self.retained = 0
        #: Called from paho's thread as C{on_meta(point_id, name, interval)} when a payload
        #: carries a display name or an expected interval (hvac-push collectors send both).
        self.on_meta: Callable[[str, str | None, float | None], None] | None = None
        #: Set for a C{--subscribe} link: collectors' online states mark their points down or back.
        self.liveness: NodeLiveness | None = None
        #: Set for a C{--subscribe} link: point metadata and alarm limits published by collectors.
        self.meta_channel: MetaChannel | None = None

    def initial_sync(self) -> tuple[bool, str]:
        """A readiness check: true once the retained messages of the first subscription are in.

        The broker sends its retained messages right after the subscription is
        acknowledged; the sync is over when none has come for C{sync_quiet}
        seconds (or C{sync_max} seconds after the acknowledgement). It stays
        true afterwards: a later broker outage shows as C{down} points, not
        as an unready server.
        """
        if self.synced:
            return True, f"synced with {self.broker.host}:{self.broker.port} ({self.retained} retained messages)"
        subscribed = self._subscribed_at
        if subscribed is None:
            return False, f"waiting for {self.broker.host}:{self.broker.port}"
        now = time.monotonic()
        if now - max(subscribed, self._last_retained_at) >= self.sync_quiet or now - subscribed >= self.sync_max:
            self.synced = True
            return self.initial_sync()
        return False, f"receiving retained messages from {self.broker.host}:{self.broker.port} ({self.retained} so far)"

    def count_malformed(self, topic: str, why: str) -> None:
        with self._lock:
            self.malformed += 1
            if topic in self.malformed_by_topic or len(self.malformed_by_topic) < 1000:
                self.malformed_by_topic[topic] += 1
            count = self.malformed
        if self._quiet.allow(topic):
            log.warn(
                "mqtt {name}: dropped a malformed message on {topic!r}: {why} ({count} dropped so far)",
                name=self.name, topic=topic, why=why, count=count,
            )

    def count_unread(self, topic: str, reason: str, why: str) -> None:
        """A mapping that does not fit a message: counted by reason, logged at most once a minute per topic."""
        with self._lock:
            self.unread[reason] += 1
            count = sum(self.unread.values())
        if self._quiet.allow(topic):
            log.warn(
                "mqtt {name}: could not read a point from {topic!r}: {why} ({count} so far)",
                name=self.name, topic=topic, why=why, count=count,
            )

    def run(self, publish: Callable[[Sequence[Sample]], None], stop: threading.Event) -> None:
        """Connect, subscribe and hand messages over until C{stop} is set."""
        session = _Session(self, publish)
        client = session.client = make_client(
            self.broker, client_id=self.client_id, reconnect_min=self.reconnect_min,
            reconnect_max=self.reconnect_max, connect_timeout=self.connect_timeout,
        )
        client.on_connect = session.on_connect
        client.on_connect_fail = session.on_connect_fail
        client.on_disconnect = session.on_disconnect
        client.on_subscribe = session.on_subscribe
        client.on_message = session.on_message
        client.connect_async(*session.failover.current, self.keepalive)
        client.loop_start()
        try:
            while not stop.wait(0.1):  # bounded wake-ups: a lost connection's grace runs out here
                session.tick()
                session.retry_subscription()
        finally:
            session.stopping = True
            client.disconnect()
            client.loop_stop()
            self.connected = False


class _Session:
    """The paho callbacks of one C{run}; they all run in paho's network thread."""

    def __init__(self, producer: MqttProducer, publish: Callable[[Sequence[Sample]], None]):
        self.producer = producer
        self.publish = publish
        self.stopping = False
        #: L{None} before the first outcome, then whether the broker is usable.
        self.up: bool | None = None
        #: The last sample of every point this session has handed over.
        self.states = PointStates(_MAX_TRACKED)
        #: Discovery config topic -> the entity it announced.
        self.entities: dict[str, Entity] = {}
        #: SUBSCRIBE packets for availability topics found by discovery (counted by mqtt-sync).
        self._discovery_mids: set[int] = set()
        self.sparkplug: Any = None
        if producer.sparkplug is not None:
            from hvac_push.sources.sparkplug import SparkplugHost  # imports protobuf only when used

            self.sparkplug = SparkplugHost(producer.sparkplug)
        #: The Sparkplug host of the running session (for tests and the health page).
        producer.sparkplug_host = self.sparkplug
        #: Availability topic -> point id -> (online payload, offline payload).
        self.availability: dict[str, dict[str, tuple[str, str]]] = {}
        self.failover = Failover(producer.broker)
        self.client: Any = None
        #: When the connection was lost (monotonic), while its points are not marked yet.
        self._lost_at: float | None = None
        self.marked_down = False
        self._marking = threading.Lock()
        #: A refused subscription is asked for again at this time (monotonic), after this delay.
        self._retry_at: float | None = None
        self._retry_delay = producer.reconnect_min
        self._retry_filters: list[tuple[list[str], bool]] = []
        #: SUBSCRIBE packets awaiting their SUBACK: mid -> (filters, whether they are the points' filters).
        self._suback_filters: dict[int, tuple[list[str], bool]] = {}
        self._suback_lock = threading.Lock()
        self._suback_sent: dict[int, float] = {}
        self.subscribe_timeout = 10.0

    def _known(self) -> set[str]:
        return self.states.known() | set(self.producer.topics.declared)

    def _down(self, why: str) -> None:
        self.producer.connected = False
        node = self.failover.describe()
        if self.client is not None:
            self.failover.lost(self.client)
        with self._suback_lock:
            self._suback_filters.clear()
            self._suback_sent.clear()
        if self.stopping or self.up is False:
            return
        report_connection(self.publish, why)
        self.up = False
        if self._lost_at is None:
            self._lost_at = time.monotonic()
        p = self.producer
        log.warn("mqtt {name} ({node}): {why}; trying {nodes} node(s) for {grace:g} s before marking its points down",
                 name=p.name, node=node, nodes=len(self.failover.addresses), why=why,
                 grace=p.failover_grace)
        self.tick()

    def tick(self) -> None:
        """Once the grace after a lost connection runs out, the points this source feeds are C{down}."""
        with self._marking:  # tick runs in the source's thread, the rest in paho's
            lost_at = self._lost_at
            if lost_at is None or self.up or time.monotonic() - lost_at < self.producer.failover_grace:
                return
            self._lost_at = None
            self.marked_down = True
            self.states.mark(self.publish, self._known(), "down")
        log.warn("mqtt {name}: no broker node reachable; its points are down until one is back",
                 name=self.producer.name)

    def on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            if reason_code.is_failure:
                self._down(f"connection refused: {reason_code}")
                return
            self.producer.connects += 1
            self._discovery_mids.clear()  # the new session's subscription covers them
            self.producer.subscriptions_pending = 0
            self._retry_at = None
            self._retry_filters = []
            self._retry_delay = self.producer.reconnect_min
            self._subscribe(client)
        except Exception:
            log.failure("mqtt {name}: on_connect failed", name=self.producer.name)

    def _subscribe(self, client: Any) -> None:
        self._suback_filters.clear()
        filters = self.producer.topics.filters()
        if self.producer.homeassistant is not None:
            filters += self.producer.homeassistant.filters()
        filters += [t for t in self.availability if t not in filters]
        if self.sparkplug is not None:
            filters += self.sparkplug.filters()
        if not filters:
            self._subscribed()
        else:
            self._send_subscribe(client, filters, points=True)
        side = [c.filter for c in (self.producer.liveness, self.producer.meta_channel) if c is not None]
        if side:
            # Their own packet: a refusal of one is retried without holding the other back.
            self._send_subscribe(client, side, points=False)

    def _send_subscribe(self, client: Any, filters: list[str], points: bool) -> None:
        with self._suback_lock:  # a retry is sent from the source's thread; its SUBACK may come first
            _, mid = client.subscribe([(f, self.producer.qos) for f in filters])
            self._suback_filters[mid] = (filters, points)
            self._suback_sent[mid] = time.monotonic()

    def on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        try:
            if mid in self._discovery_mids:
                self._discovery_mids.discard(mid)
                self.producer.subscriptions_pending = len(self._discovery_mids)
                return
            with self._suback_lock:
                sent = self._suback_filters.pop(mid, None)
                self._suback_sent.pop(mid, None)
            if sent is None:
                return
            filters, points = sent
            refused = [f for f, code in zip(filters, reason_codes) if code.is_failure]
            self._refused(refused, points)
            if points and len(refused) < len(filters):
                self._subscribed()
        except Exception:
            log.failure("mqtt {name}: on_subscribe failed", name=self.producer.name)

    def _refused(self, refused: list[str], points: bool, why: str = "refused by the broker") -> None:
        """Ask for C{refused} again, with backoff (either thread).

        A clustered broker refuses while it elects a leader (NATS: its JetStream
        consumer timed out); the points stay as they are meanwhile (down once
        the grace runs out).
        """
        if not refused:
            return
        with self._suback_lock:
            delay = self._retry_delay
            self._retry_delay = min(delay * 2, self.producer.reconnect_max)
            self._retry_at = time.monotonic() + delay
            self._retry_filters.append((refused, points))
        log.warn("mqtt {name} ({node}): subscription to {filters} {why}; again in {delay:g} s",
                 name=self.producer.name, node=self.failover.describe(), filters=", ".join(refused),
                 why=why, delay=delay)

    def retry_subscription(self) -> None:
        """From the source's thread: subscribe again to what was refused, once its delay has passed."""
        now = time.monotonic()
        with self._suback_lock:
            # A broker busy electing a leader may never answer a SUBSCRIBE: a silence counts as a refusal.
            late = [mid for mid, at in self._suback_sent.items() if now - at > self.subscribe_timeout]
            unanswered = [self._suback_filters.pop(mid) for mid in late]
            for mid in late:
                del self._suback_sent[mid]
        for filters, points in unanswered:
            self._refused(filters, points, f"not answered within {self.subscribe_timeout:g} s")
        client = self.client
        with self._suback_lock:
            retry_at = self._retry_at
            if retry_at is None or client is None or now < retry_at or not client.is_connected():
                return
            self._retry_at = None
            again, self._retry_filters = self._retry_filters, []
        for filters, points in again:
            self._send_subscribe(client, filters, points)

    def _subscribed(self) -> None:
        p = self.producer
        p.connected = True
        report_connection(self.publish, None)
        if p._subscribed_at is None:
            p._subscribed_at = time.monotonic()
        with self._marking:
            was = self.up
            self.up = True
            self._lost_at = None
            if was is False and self.marked_down:
                self.marked_down = False
                dead = self.producer.liveness.down_points() if self.producer.liveness is not None else set()
                # Sparkplug points come back with their node's rebirth, which is asked for below.
                waiting = self.sparkplug.point_ids() if self.sparkplug is not None else set()
                self.states.mark(self.publish, self._known() - dead - waiting, "ok")
        if was is False:
            if self.sparkplug is not None and self.client is not None:
                self._apply(self.client, "(reconnected)", self.sparkplug.reconnected())
            log.info("mqtt {name} ({node}) is back", name=p.name, node=self.failover.describe())

    def on_connect_fail(self, client: Any, userdata: Any) -> None:
        try:
            self._down("cannot connect")
        except Exception:
            log.failure("mqtt {name}: on_connect_fail failed", name=self.producer.name)

    def on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            self._down(f"connection lost ({reason_code})")
        except Exception:
            log.failure("mqtt {name}: on_disconnect failed", name=self.producer.name)

    def on_message(self, client: Any, userdata: Any, message: Any) -> None:
        producer = self.producer
        topic = "?"
        try:
            topic = message.topic
            payload: bytes = message.payload
            ha = producer.homeassistant
            if ha is not None and ha.parts(topic) is not None:
                if message.retain:  # retained configs are part of the initial sync (mqtt-sync)
                    producer.retained += 1
                    producer._last_retained_at = time.monotonic()
                self._discovery(client, ha, topic, payload)
                return
            if self.sparkplug is not None and self.sparkplug.handles(topic):
                self._apply(client, topic, self.sparkplug.handle(topic, payload))
                return
            if not payload:
                return  # a retained message being cleared
            if message.retain:  # metadata and liveness are part of the initial state too
                producer._last_retained_at = time.monotonic()
            channel = producer.meta_channel
            about = channel.point_of(topic) if channel is not None else None
            if channel is not None and about is not None:
                try:
                    channel.handle(about, payload)
                except (ValueError, TypeError) as e:
                    producer.count_malformed(topic, f"bad metadata: {e}")
                return
            liveness = producer.liveness
            node = liveness.node_of(topic) if liveness is not None else None
            if liveness is not None and node is not None:
                liveness.update(node, payload, self.states, self.publish)
                return
            if topic in self.availability:
                self._available(topic, payload)  # and maybe a state topic too: go on
            try:
                routes = producer.topics.routes(topic)
            except InvalidPoint as e:
                producer.count_malformed(topic, f"topic does not map to a point id: {e}")
                count_error(self.publish, "malformed")
                return
            if not routes:
                return
            if len(routes) > 1 or not routes[0].payload.plain:
                self._mapped(topic, payload, routes, bool(message.retain))
                return
            point_id, unit = routes[0].point_id, routes[0].unit
            try:
                parsed = parse_message(payload)
            except BadPayload as e:
                text = payload.decode("utf-8", "replace") if len(payload) <= 64 else ""
                with_unit = number_with_unit(text) if text and not text.lstrip().startswith("{") else None
                if with_unit is None:
                    producer.count_malformed(topic, str(e))
                    count_error(self.publish, "malformed")
                    return
                parsed = Message(with_unit[0], unit=with_unit[1] or None)
            producer.received += 1
            if message.retain:
                producer.retained += 1
                producer._last_retained_at = time.monotonic()
            if producer.on_meta is not None and (parsed.name is not None or parsed.interval is not None):
                producer.on_meta(point_id, parsed.name, parsed.interval)
            status: Status = parsed.status or "ok"
            if liveness is not None:
                status = liveness.status_of(point_id, parsed.node, status)
            # Stamped here, on arrival, so a later status mark can repeat this exact ts.
            sample = Sample(
                point_id,
                parsed.value,
                parsed.unit if parsed.unit is not None else unit,
                parsed.ts or time.time(),
                status,
            )
            self.states.remember([sample])
            self.publish([sample])
        except Exception:
            log.failure("mqtt {name}: handling a message on {topic!r} failed", name=producer.name, topic=topic)

    def _discovery(self, client: Any, ha: HaDiscovery, topic: str, payload: bytes) -> None:
        """A Home Assistant config message: add (or replace, or remove) the point it announces."""
        producer = self.producer
        try:
            entity = parse_entity(ha, topic, payload)
        except BadDiscovery as e:
            producer.count_unread(topic, "bad_discovery", str(e))
            count_error(self.publish, "bad_discovery")
            return
        old = self.entities.get(topic)
        if entity == old:
            return  # the retained config again, after a reconnect
        if old is not None:
            producer.topics.remove(old.point_id)
            self.entities.pop(topic)
            for points in self.availability.values():
                points.pop(old.point_id, None)
        if entity is None:
            if old is not None:  # nothing feeds it any more: its last value is kept, flagged as not live
                self.states.mark(self.publish, [old.point_id], "stale")
            return
        if producer.topics.has(entity.point_id):
            producer.count_unread(topic, "bad_discovery", f"{entity.point_id} is already a point of this source")
            count_error(self.publish, "bad_discovery")
            return  # the plant file's point (or another entity's) keeps its own settings
        point = MqttPoint(entity.point_id, entity.topic, entity.unit, entity.payload)
        try:
            subscribe = [entity.topic] if producer.topics.add(point) else []
        except (ValueError, InvalidPoint) as e:
            producer.count_unread(topic, "bad_discovery", str(e))
            count_error(self.publish, "bad_discovery")
            return
        self.entities[topic] = entity
        if entity.availability is not None:
            avty, online, offline = entity.availability
            if avty not in self.availability:
                subscribe.append(avty)
            self.availability.setdefault(avty, {})[entity.point_id] = (online, offline)
        if subscribe:
            _, mid = client.subscribe([(t, producer.qos) for t in subscribe])
            self._discovery_mids.add(mid)
            producer.subscriptions_pending = len(self._discovery_mids)
        producer.discovered += 1
        declare_points(self.publish, [(entity.point_id, entity.unit)], {entity.point_id: entity.name})

    def _apply(self, client: Any, topic: str, outcome: Outcome) -> None:
        """Carry out what a Sparkplug message means: declare, publish, mark down, ask for rebirths, count."""
        producer = self.producer
        for reason, why in outcome.problems:
            producer.count_unread(topic, reason, why)
            count_error(self.publish, reason)
        if outcome.declare:
            declare_points(self.publish, outcome.declare, outcome.names)
        if outcome.samples:
            producer.received += 1
            self.states.remember(outcome.samples)
            self.publish(outcome.samples)
        if outcome.down:
            self.states.mark(self.publish, outcome.down, "down")
        for command_topic, command in outcome.commands:
            client.publish(command_topic, command, qos=0)

    def _available(self, topic: str, payload: bytes) -> None:
        """An availability message: offline makes the entities' points C{down}, online brings them back."""
        text = payload.decode("utf-8", "replace").strip()
        if text.startswith("{"):
            try:
                doc = json.loads(text)
                text = str(doc.get("state", "")) if isinstance(doc, dict) else text
            except ValueError:
                pass
        points = self.availability.get(topic, {})
        down = [pid for pid, (_, offline) in points.items() if text == offline]
        back = [pid for pid, (online, _) in points.items() if text == online and pid in self.states.known()]
        self.states.mark(self.publish, down, "down")
        self.states.mark(self.publish, back, "ok")

    def _mapped(self, topic: str, payload: bytes, routes: Sequence[MqttPoint], retained: bool) -> None:
        """One message read through the payload maps of every point it feeds: one batch of samples."""
        producer = self.producer
        if len(payload) > MAX_MAPPED_PAYLOAD:
            producer.count_malformed(topic, f"payload larger than {MAX_MAPPED_PAYLOAD} bytes")
            count_error(self.publish, "malformed")
            return
        try:
            doc = decode(payload)
        except BadMapping as e:
            producer.count_malformed(topic, str(e))
            count_error(self.publish, "malformed")
            return
        producer.received += 1
        if retained:
            producer.retained += 1
            producer._last_retained_at = time.monotonic()
        now = time.time()
        samples = []
        for route in routes:
            try:
                reading = read(route.payload, doc)
            except BadMapping as e:
                producer.count_unread(topic, e.reason, f"{route.point_id}: {e}")
                count_error(self.publish, e.reason)
                continue
            unit = reading.unit if reading.unit is not None else route.unit
            samples.append(Sample(route.point_id, reading.value, unit, reading.ts or now, "ok"))
        if samples:
            self.states.remember(samples)
            self.publish(samples)


__all__ = [
    "BadPayload", "Message", "MqttPoint", "MqttProducer", "PayloadMap", "TopicMap",
    "check_topic", "check_topic_template", "parse_message", "parse_payload",
]
