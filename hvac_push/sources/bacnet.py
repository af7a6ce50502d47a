"""BACnet/IP source: one producer per local interface, serving any number of remote devices.

The producer's thread runs its own asyncio loop with a bacpypes3 application
in it (bacpypes3 is asyncio; the reactor never sees it). For each device:

 - find it (its C{address}, or Who-Is for its C{device} instance), read every
   point once with ReadPropertyMultiple (value, status-flags, reliability and,
   for points without a configured unit, engineering units);
 - subscribe to COV for each C{present-value} point, renewing each
   subscription at three quarters of its lifetime; points whose object or
   device refuses COV are polled with ReadPropertyMultiple, in batches, every
   C{interval} seconds;
 - check every C{interval} that the device still answers (the poll does it,
   or a one-property read when every point is on COV).

Samples reach the hub only through C{publish}, one batch per loop turn.
Status-flags and reliability become the point status through
L{hvac_push.sources.bacnet_maps.STATUS_RULES}. A device that stops answering
turns its points C{fault} (through L{PointStates.mark}), is retried with
backoff, and is re-read and re-subscribed when it answers again. Problems are
logged at most once per minute per point (or device) and counted in
L{BacnetProducer.counters}.

C{python -m hvac_push.sources.bacnet discover} finds devices and prints a plant-file section
(L{hvac_push.sources.bacnet_discover}).
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from hvac_push.core.points import Sample, Status, Value, check_point_id
from hvac_push.sources.bacnet_maps import (
    DEFAULT_PORT,
    MAX_INSTANCE,
    STATUS_FLAGS,
    check_property,
    has_broadcast,
    parse_ip_address,
    parse_object,
    point_status,
    unit_string,
)
from hvac_push.sources.bacnet_stack import PortInUse, open_application, to_value
from hvac_push.sources.common import Backoff, PointStates, QuietLog, log

#: Objects per ReadPropertyMultiple request (fewer after a device refuses a large one).
RPM_BATCH = 25
#: Subscriptions sent at the same time when (re)subscribing a device.
SUBSCRIBE_CONCURRENCY = 16
#: Counter names of L{BacnetProducer.counters}.
COUNTERS = (
    "requests", "timeouts", "errors", "rejects", "aborts", "malformed", "bad_values",
    "cov_notifications", "cov_subscriptions", "cov_renewals", "cov_refused", "port_in_use",
)


@dataclass(frozen=True, slots=True)
class BacnetPoint:
    """One point: a property of an object in a remote device (found by C{device} instance or C{address})."""

    point_id: str
    object: str
    device: int | None = None
    address: str | None = None
    property_name: str = "present-value"
    #: Changes smaller than this are not published (status changes always are).
    cov_increment: float | None = None
    #: Unit string; empty: taken from the object's engineering units.
    unit: str = ""

    def __post_init__(self) -> None:
        check_point_id(self.point_id)
        parse_object(self.object)
        check_property(self.property_name)
        if self.device is None and self.address is None:
            raise ValueError(f"{self.point_id}: give the device instance or its address")
        if self.device is not None and not 0 <= self.device <= MAX_INSTANCE:
            raise ValueError(f"{self.point_id}: device instance out of range")
        if self.address is not None:
            parse_ip_address(self.address, prefix=False)
        if self.cov_increment is not None and not (math.isfinite(self.cov_increment) and self.cov_increment >= 0):
            raise ValueError(f"{self.point_id}: cov_increment must be a finite number >= 0")

    @property
    def device_key(self) -> str:
        """How the device is named in logs; points with the same key share one device."""
        if self.address is not None:
            host, _, port = parse_ip_address(self.address, prefix=False)
            return f"{host}:{port}"
        return f"device {self.device}"


class BacnetProducer:
    """Reads BACnet/IP devices from the local interface C{address} (C{"A.B.C.D[/PREFIX][:PORT]"})."""

    def __init__(
        self,
        name: str,
        address: str,
        points: Sequence[BacnetPoint],
        *,
        device_instance: int = MAX_INSTANCE,
        device_name: str = "hvac-push",
        apdu_timeout: float = 3.0,
        retries: int = 3,
        interval: float = 10.0,
        cov_lifetime: int = 300,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ):
        if not points:
            raise ValueError(f"bacnet source {name}: no points to read")
        parse_ip_address(address)
        if not interval > 0 or not apdu_timeout > 0 or retries < 0 or cov_lifetime < 2:
            raise ValueError(f"bacnet source {name}: interval and apdu_timeout must be > 0, retries >= 0, "
                             "cov_lifetime >= 2")
        self.name = name
        self.address = address
        self.points = tuple(points)
        self.device_instance = device_instance
        self.device_name = device_name
        self.apdu_timeout = apdu_timeout
        self.retries = retries
        self.interval = interval
        self.cov_lifetime = int(cov_lifetime)
        self.initial_backoff = initial_backoff
        self.max_backoff = max(initial_backoff, max_backoff)
        #: Counts of requests and problems by kind (L{COUNTERS}); plain ints, readable from any thread.
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        #: Device key -> "up" or "down", as last seen.
        self.devices: dict[str, str] = {}
        #: Point id -> "cov" or "poll": how each point is read now.
        self.modes: dict[str, str] = {}
        self.quiet = QuietLog(60.0)

    def run(self, publish: Callable[[Sequence[Sample]], None], stop: threading.Event) -> None:
        """Run the asyncio loop until C{stop} is set; a taken local port is retried with backoff."""
        states = PointStates()
        backoff = Backoff(self.initial_backoff, self.max_backoff)
        while not stop.is_set():
            session = _Session(self, publish, stop, states)
            try:
                asyncio.run(session.main())
            except PortInUse as e:
                self.counters["port_in_use"] += 1
                if self.quiet.allow(f"{self.name}:port"):
                    log.error("bacnet {name}: {error}; retrying", name=self.name, error=str(e))
                states.mark(publish, [p.point_id for p in self.points], "fault")
                stop.wait(backoff.next())
                continue
            return

    def count(self, kind: str, n: int = 1) -> None:
        self.counters[kind] = self.counters.get(kind, 0) + n


def _flags(raw: Any) -> set[str]:
    """Status-flags bits as condition names."""
    bits = list(raw) if raw is not None else []
    return {name for name, bit in zip(STATUS_FLAGS, bits) if bit}


def _nack_text(e: BaseException) -> str:
    """A one-line description of an Error, Reject or Abort answer."""
    from bacpypes3.apdu import ErrorPDU, RejectPDU

    if isinstance(e, ErrorPDU):
        return f"error {getattr(e, 'errorClass', None)}: {getattr(e, 'errorCode', None)}"
    return f"{'reject' if isinstance(e, RejectPDU) else 'abort'}: {getattr(e, 'apduAbortRejectReason', None)}"


def _nack_kind(e: BaseException) -> str:
    """The counter for an Error, Reject or Abort answer ("timeouts" for no answer at all)."""
    from bacpypes3.apdu import AbortPDU, RejectPDU

    if isinstance(e, AbortPDU):
        return "timeouts" if str(e.apduAbortRejectReason) == "no-response" else "aborts"
    return "rejects" if isinstance(e, RejectPDU) else "errors"


class DeviceSilent(Exception):
    """The device did not answer (or could not be found)."""


@dataclass(eq=False)
class _PointState:
    point: BacnetPoint
    object_id: Any
    unit: str
    conditions: set[str] = field(default_factory=set)
    sent_value: Value | None = None
    sent_status: Status | None = None
    proc_id: int | None = None
    problem: str | None = None


@dataclass(eq=False)
class _Device:
    key: str
    instance: int | None
    address: Any  # bacpypes3 Address, once known
    points: list[_PointState]
    polled: list[_PointState] = field(default_factory=list)
    subscribed: list[_PointState] = field(default_factory=list)
    batch: int = RPM_BATCH
    rpm: bool = True
    up: bool | None = None
    #: The address came from an I-Am: look it up again after the device goes silent.
    located: bool = False


class _Session:
    """One bacpypes3 application and its device tasks, for one call of L{BacnetProducer.run}."""

    def __init__(
        self, producer: BacnetProducer, publish: Callable[[Sequence[Sample]], None],
        stop: threading.Event, states: PointStates,
    ):
        self.p = producer
        self.publish = publish
        self.stop = stop
        self.states = states
        self.pending: list[Sample] = []
        self.flush_scheduled = False
        self.by_proc: dict[int, tuple[_Device, _PointState]] = {}
        self.next_proc = 1
        self.app: Any = None

    async def main(self) -> None:
        from bacpypes3.app import Application
        from bacpypes3.apdu import SimpleAckPDU
        from bacpypes3.errors import ServicesError
        from bacpypes3.pdu import Address
        from bacpypes3.primitivedata import ObjectIdentifier

        session = self

        class Client(Application):
            """Takes COV notifications for subscriptions registered before they were sent."""

            async def do_UnconfirmedCOVNotificationRequest(self, apdu: Any) -> None:
                session.on_notification(apdu)

            async def do_ConfirmedCOVNotificationRequest(self, apdu: Any) -> None:
                if not session.on_notification(apdu):
                    raise ServicesError(errorCode="unknownSubscription")
                await self.response(SimpleAckPDU(context=apdu))

        p = self.p
        self.app = open_application(
            p.address, p.device_instance, p.device_name, p.apdu_timeout, p.retries,
            on_malformed=self.on_malformed, app_class=Client,
        )
        devices: dict[str, _Device] = {}
        for point in p.points:
            dev = devices.get(point.device_key)
            if dev is None:
                address = None
                if point.address is not None:
                    host, _, port = parse_ip_address(point.address, prefix=False)
                    address = Address(f"{host}:{port}")
                dev = devices[point.device_key] = _Device(point.device_key, point.device, address, [])
            kind, instance = parse_object(point.object)
            dev.points.append(_PointState(point, ObjectIdentifier((kind, instance)), point.unit))
        tasks = [asyncio.create_task(self.serve_device(dev)) for dev in devices.values()]
        try:
            while not self.stop.is_set():
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(self.unsubscribe_all(devices.values()), timeout=1.0)
            except (asyncio.TimeoutError, Exception):
                pass
            self.flush()
            self.app.close()

    # -- publishing --------------------------------------------------------------

    def emit(self, dev: _Device, ps: _PointState, raw: Any, conditions: set[str] | None) -> None:
        """Queue a new reading of C{ps} (published at the end of this loop turn)."""
        point = ps.point
        try:
            value = to_value(raw)
        except ValueError as e:
            self.p.count("bad_values")
            self.point_problem(dev, ps, f"bad value: {e}")
            return
        if conditions is not None:
            ps.conditions = conditions
        ps.problem = None
        status = point_status(ps.conditions)
        if (
            point.cov_increment
            and status == ps.sent_status
            and isinstance(value, (int, float)) and not isinstance(value, bool)
            and isinstance(ps.sent_value, (int, float)) and not isinstance(ps.sent_value, bool)
            and abs(value - ps.sent_value) < point.cov_increment
        ):
            return
        ps.sent_value, ps.sent_status = value, status
        self.pending.append(Sample(point.point_id, value, ps.unit, time.time(), status))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        batch, self.pending = self.pending, []
        if batch:
            self.states.remember(batch)
            self.publish(batch)

    def mark_fault(self, states: Iterable[_PointState]) -> None:
        self.flush()
        chosen = list(states)
        for ps in chosen:
            ps.sent_status = "fault"
        self.states.mark(self.publish, [ps.point.point_id for ps in chosen], "fault")

    def point_problem(self, dev: _Device, ps: _PointState, problem: str) -> None:
        """A read of one point failed while its device answers: fault, one log line a minute."""
        if self.p.quiet.allow(f"{self.p.name}:{ps.point.point_id}"):
            log.warn(
                "bacnet {name}: {point} ({device}, {object} {prop}): {problem}; point marked fault",
                name=self.p.name, point=ps.point.point_id, device=dev.key, object=ps.point.object,
                prop=ps.point.property_name, problem=problem,
            )
        ps.problem = problem
        self.mark_fault([ps])

    def on_malformed(self, what: str) -> None:
        self.p.count("malformed")
        if self.p.quiet.allow(f"{self.p.name}:malformed"):
            log.warn("bacnet {name}: {what} (dropped)", name=self.p.name, what=what)

    # -- one device ----------------------------------------------------------

    async def serve_device(self, dev: _Device) -> None:
        """Connect, then poll / renew until cancelled; a silent device is retried with backoff."""
        backoff = Backoff(self.p.initial_backoff, self.p.max_backoff)
        while True:
            try:
                await self.connect(dev)
                backoff.reset()
                await self.keep(dev)
            except DeviceSilent as e:
                self.device_down(dev, str(e))
                await asyncio.sleep(backoff.next())

    def device_down(self, dev: _Device, reason: str) -> None:
        # Process ids stay: subscribing again with the same one renews, never duplicates, a
        # subscription the device may still hold.
        dev.subscribed = []
        if self.p.quiet.allow(f"{self.p.name}:{dev.key}"):
            log.warn(
                "bacnet {name}: {device} is unreachable ({reason}); its {n} point(s) are fault, retrying",
                name=self.p.name, device=dev.key, reason=reason, n=len(dev.points),
            )
        dev.up = False
        if dev.located:
            dev.address, dev.located = None, False
        self.p.devices[dev.key] = "down"
        for ps in dev.points:
            ps.conditions = {"no-answer"}
        self.mark_fault(dev.points)

    async def request(self, dev: _Device, coroutine: Any) -> Any:
        """Await a confirmed request; no answer at all raises L{DeviceSilent}, other nacks are returned."""
        from bacpypes3.apdu import ErrorRejectAbortNack

        self.p.count("requests")
        try:
            return await coroutine
        except ErrorRejectAbortNack as e:
            kind = _nack_kind(e)
            self.p.count(kind)
            if kind == "timeouts":
                raise DeviceSilent(f"no answer within {self.p.apdu_timeout:g}s x {self.p.retries + 1}") from None
            return e

    async def connect(self, dev: _Device) -> None:
        from bacpypes3.apdu import ErrorRejectAbortNack

        if dev.address is None:
            if not has_broadcast(self.p.address):
                raise DeviceSilent(
                    f"no address to reach it: give the device's address, or a /PREFIX in {self.p.name}'s "
                    "address so that Who-Is can be broadcast"
                )
            found = await self.app.who_is(dev.instance, dev.instance, timeout=self.p.apdu_timeout)
            if not found:
                self.p.count("timeouts")
                raise DeviceSilent(f"no I-Am answered Who-Is {dev.instance}")
            dev.address = found[0].pduSource
            dev.located = True
        dev.polled, dev.subscribed = [], []
        await self.read(dev, dev.points, initial=True)
        if dev.up is False:
            log.info("bacnet {name}: {device} answers again", name=self.p.name, device=dev.key)
        dev.up = True
        self.p.devices[dev.key] = "up"
        wanted = [ps for ps in dev.points if ps.point.property_name == "present-value" and ps.problem is None]
        dev.polled = [ps for ps in dev.points if ps not in wanted]
        for start in range(0, len(wanted), SUBSCRIBE_CONCURRENCY):
            chunk = wanted[start:start + SUBSCRIBE_CONCURRENCY]
            results = await asyncio.gather(*(self.subscribe(dev, ps) for ps in chunk))
            for ps, answer in zip(chunk, results):
                if isinstance(answer, ErrorRejectAbortNack):
                    self.p.count("cov_refused")
                    dev.polled.append(ps)
                    self.p.modes[ps.point.point_id] = "poll"
                    if self.p.quiet.allow(f"{self.p.name}:{ps.point.point_id}:cov"):
                        log.info(
                            "bacnet {name}: {point} ({device}, {object}): COV refused ({why}); polling every {interval:g}s",
                            name=self.p.name, point=ps.point.point_id, device=dev.key, object=ps.point.object,
                            why=_nack_text(answer), interval=self.p.interval,
                        )
                else:
                    dev.subscribed.append(ps)
                    self.p.modes[ps.point.point_id] = "cov"
        for ps in dev.polled:
            self.p.modes[ps.point.point_id] = "poll"

    async def subscribe(self, dev: _Device, ps: _PointState, renew: bool = False) -> Any:
        """SubscribeCOV for one point; the notification handler is registered before the request leaves."""
        from bacpypes3.apdu import SubscribeCOVRequest

        if ps.proc_id is None:
            ps.proc_id = self.next_proc
            self.next_proc = self.next_proc % 4_000_000 + 1
        self.by_proc[ps.proc_id] = (dev, ps)
        request = SubscribeCOVRequest(
            subscriberProcessIdentifier=ps.proc_id,
            monitoredObjectIdentifier=ps.object_id,
            issueConfirmedNotifications=False,
            lifetime=self.p.cov_lifetime,
            destination=dev.address,
        )
        answer = await self.request(dev, self.app.request(request))
        if _is_nack(answer):
            self.by_proc.pop(ps.proc_id, None)
            ps.proc_id = None
            return answer
        self.p.count("cov_renewals" if renew else "cov_subscriptions")
        return None

    async def keep(self, dev: _Device) -> None:
        """Poll the refusing points, check the device answers, renew subscriptions; until cancelled."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self.p.interval
        renew_every = self.p.cov_lifetime * 0.75
        next_renew = loop.time() + renew_every
        while True:
            await asyncio.sleep(max(0.0, min(next_poll, next_renew) - loop.time()))
            now = loop.time()
            if now >= next_poll:
                next_poll = now + self.p.interval
                if dev.polled:
                    await self.read(dev, dev.polled)
                elif dev.points:
                    await self.request(dev, self.app.read_property(dev.address, dev.points[0].object_id, "status-flags"))
            if now >= next_renew and dev.subscribed:
                next_renew = now + renew_every
                for start in range(0, len(dev.subscribed), SUBSCRIBE_CONCURRENCY):
                    chunk = dev.subscribed[start:start + SUBSCRIBE_CONCURRENCY]
                    results = await asyncio.gather(*(self.subscribe(dev, ps, renew=True) for ps in chunk))
                    for ps, answer in zip(chunk, results):
                        if answer is not None:  # the object went away, or COV is refused now: poll it
                            dev.subscribed.remove(ps)
                            dev.polled.append(ps)
                            self.p.modes[ps.point.point_id] = "poll"
                            self.point_problem(dev, ps, f"COV renewal refused ({_nack_text(answer)})")

    async def unsubscribe_all(self, devices: Iterable[_Device]) -> None:
        from bacpypes3.apdu import SubscribeCOVRequest

        requests = []
        for dev in devices:
            for ps in dev.subscribed:
                if ps.proc_id is not None:
                    requests.append(self.app.request(SubscribeCOVRequest(
                        subscriberProcessIdentifier=ps.proc_id, monitoredObjectIdentifier=ps.object_id,
                        destination=dev.address,
                    )))
        await asyncio.gather(*requests, return_exceptions=True)

    # -- reading ---------------------------------------------------------------

    async def read(self, dev: _Device, states: Sequence[_PointState], initial: bool = False) -> None:
        """Read points in ReadPropertyMultiple batches (ReadProperty if the device has no RPM)."""
        start = 0
        while start < len(states):
            batch = list(states[start:start + dev.batch])
            if dev.rpm:
                done = await self.read_multiple(dev, batch, initial)
                if not done:
                    continue  # the batch size or method changed: read the same points again
            else:
                for ps in batch:
                    await self.read_single(dev, ps, initial)
            start += len(batch)
        self.flush()

    def properties(self, ps: _PointState, initial: bool) -> list[str]:
        props = [ps.point.property_name, "status-flags", "reliability"]
        if initial and not ps.point.unit and ps.point.property_name == "present-value":
            props.append("units")
        return props

    async def read_multiple(self, dev: _Device, batch: list[_PointState], initial: bool) -> bool:
        """One RPM; False if the device refused it and the batch size or method was changed."""
        from bacpypes3.apdu import ErrorRejectAbortNack

        request: list[Any] = []
        for ps in batch:
            request += [ps.object_id, self.properties(ps, initial)]
        try:
            answer = await self.request(dev, self.app.read_property_multiple(dev.address, request))
        except (ValueError, TypeError) as e:  # a property name bacpypes3 does not know
            if len(batch) > 1:
                dev.batch = 1
                return False
            self.point_problem(dev, batch[0], f"unsupported property: {e}")
            return True
        if isinstance(answer, ErrorRejectAbortNack):
            if len(batch) > 1:
                dev.batch = max(1, len(batch) // 2)  # too large, or one bad object: narrow down
                return False
            if _nack_kind(answer) == "rejects" and "unrecognized-service" in str(answer):
                dev.rpm = False  # no ReadPropertyMultiple in this device
                return False
            self.point_problem(dev, batch[0], _nack_text(answer))
            return True
        if not isinstance(answer, list):
            self.on_malformed(f"unexpected answer to ReadPropertyMultiple from {dev.key}")
            for ps in batch:
                self.point_problem(dev, ps, "malformed answer")
            return True
        results: dict[tuple[Any, str], Any] = {}
        for object_id, prop, _index, value in answer:
            results[(object_id, str(prop))] = value
        for ps in batch:
            self.take(dev, ps, {prop: results.get((ps.object_id, prop)) for prop in self.properties(ps, initial)})
        return True

    async def read_single(self, dev: _Device, ps: _PointState, initial: bool) -> None:
        from bacpypes3.apdu import ErrorRejectAbortNack

        values: dict[str, Any] = {}
        for prop in self.properties(ps, initial):
            try:
                values[prop] = await self.request(dev, self.app.read_property(dev.address, ps.object_id, prop))
            except (ValueError, TypeError) as e:
                values[prop] = e
            if prop == ps.point.property_name and isinstance(values[prop], (ErrorRejectAbortNack, Exception)):
                break
        self.take(dev, ps, values)

    def take(self, dev: _Device, ps: _PointState, values: dict[str, Any]) -> None:
        """Publish one point from the properties read for it (errors in optional ones are ignored)."""
        value = values.get(ps.point.property_name)
        if value is None or _is_error(value):
            if value is not None and not _is_nack(value) and not isinstance(value, Exception):
                self.p.count("errors")  # an error element of a ReadPropertyMultiple answer
            problem = _error_text(value) if value is not None else "no value in the answer"
            self.point_problem(dev, ps, problem)
            return
        conditions: set[str] = set()
        flags = values.get("status-flags")
        if flags is not None and not _is_error(flags):
            conditions |= _flags(flags)
        reliability = values.get("reliability")
        if reliability is not None and not _is_error(reliability) and str(reliability) != "no-fault-detected":
            conditions.add("unreliable")
        units = values.get("units")
        if units is not None and not _is_error(units) and not ps.point.unit:
            ps.unit = unit_string(str(units))
        self.emit(dev, ps, value, conditions)

    # -- COV notifications -------------------------------------------------------

    def on_notification(self, apdu: Any) -> bool:
        """Publish what a COV notification says; False if it is for no subscription of ours."""
        found = self.by_proc.get(apdu.subscriberProcessIdentifier)
        if found is None:
            return False
        dev, ps = found
        if apdu.monitoredObjectIdentifier != ps.object_id:
            return False
        self.p.count("cov_notifications")
        from bacpypes3.vendor import get_vendor_info

        object_class = get_vendor_info(0).get_object_class(ps.object_id[0])
        value: Any = None
        conditions: set[str] | None = None
        try:
            for item in apdu.listOfValues:
                prop = str(item.propertyIdentifier)
                kind = object_class.get_property_type(item.propertyIdentifier) if object_class else None
                if kind is None:
                    continue
                if prop == "present-value":
                    value = item.value.cast_out(kind)
                elif prop == "status-flags":
                    conditions = _flags(item.value.cast_out(kind))
        except Exception as e:
            self.on_malformed(f"undecodable COV notification from {dev.key}: {e}")
            return True
        if value is None:
            if conditions is not None and ps.sent_value is not None:
                # A status-only notification: the value stays, the status changes.
                ps.conditions = conditions
                status = point_status(conditions)
                if status != ps.sent_status:
                    ps.sent_status = status
                    self.pending.append(Sample(ps.point.point_id, ps.sent_value, ps.unit, time.time(), status))
                    self.flush()
            return True
        self.emit(dev, ps, value, conditions)
        return True


def _is_nack(value: Any) -> bool:
    try:
        from bacpypes3.apdu import ErrorRejectAbortNack
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, ErrorRejectAbortNack)


def _is_error(value: Any) -> bool:
    """An error element of an RPM answer, a nack, or an exception: not a value."""
    return (
        _is_nack(value)
        or isinstance(value, Exception)
        or (hasattr(value, "errorClass") and hasattr(value, "errorCode"))
    )


def _error_text(value: Any) -> str:
    if hasattr(value, "errorCode"):
        code = str(value.errorCode)
        what = {"unknown-object": "object missing", "unknown-property": "unsupported property"}.get(code)
        return f"{what} ({value.errorClass}: {code})" if what else f"error {value.errorClass}: {code}"
    if _is_nack(value):
        return _nack_text(value)
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """C{python -m hvac_push.sources.bacnet discover ...}."""
    from hvac_push.sources.bacnet_discover import main as discover_main

    return discover_main(list(sys.argv[1:] if argv is None else argv))


__all__ = ["BacnetPoint", "BacnetProducer", "COUNTERS", "DEFAULT_PORT", "PortInUse", "open_application", "to_value"]

if __name__ == "__main__":
    sys.exit(main())
