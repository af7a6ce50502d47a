"""Modbus TCP source: one producer (one thread) per unit id, over a connection shared per gateway.

Each poll reads the unit's due points in as few requests as possible (nearby
addresses of one table with the same poll interval are read together),
decodes them (L{hvac_push.sources.modbus_codec}) and hands them over as one
batch. Every unit id behind one host and port shares one TCP connection
(L{hvac_push.sources.modbus_gateway}).

What a refusal does depends on what it says. Transient exceptions (busy,
gateway path unavailable, gateway target failed to respond) are retried and
never change the read plan. "Illegal address" splits a merged read into
single-point reads to find the bad point, and the whole read is tried again
after a while. A gateway that answers for none of the unit's reads that it
cannot reach it makes the unit's points C{down}, as an unreachable device
does (retried with an exponential backoff); a point whose read is refused
otherwise, or whose value cannot be carried (a NaN float), turns C{fault}
alone. The next good reading of a point carries status C{ok} again. Every
refused read is counted by reason (C{unreachable}, C{decode}, and one name
per Modbus exception code, such as C{busy} or C{illegal_address}). Nothing
here runs on, or blocks, the reactor thread.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from hvac_push.core.points import Sample
from hvac_push.sources.common import Backoff, PointStates, log
from hvac_push.sources.modbus_codec import TABLES, ModbusPoint, decode, encode
from hvac_push.sources.modbus_gateway import (
    GATEWAY_CODES,
    GATEWAYS,
    ILLEGAL_ADDRESS,
    TRANSIENT,
    DeviceUnreachable,
    Gateway,
    GatewayPool,
    exception_reason,
)
from hvac_push.sources.supervisor import count_error, report_connection

#: Largest read per request (the Modbus PDU limits: 125 registers, 2000 bits).
MAX_REGISTERS = 125
MAX_BITS = 2000
#: Addresses this far apart (or closer) are read in one request.
MERGE_GAP = 8


@dataclass(frozen=True, slots=True)
class _Block:
    """One read request: a table, a start address and a count, covering some points."""

    table: str
    address: int
    count: int
    points: tuple[ModbusPoint, ...]


def plan_reads(points: Iterable[ModbusPoint], gap: int = MERGE_GAP) -> list[_Block]:
    """Group points into as few reads as the Modbus limits allow."""
    points = list(points)
    blocks: list[_Block] = []
    for table in TABLES:
        limit = MAX_BITS if table in ("coil", "discrete") else MAX_REGISTERS
        members = sorted((p for p in points if p.table == table), key=lambda p: (p.address, p.count))
        group: list[ModbusPoint] = []
        start = end = 0
        for point in members:
            point_end = point.address + point.count
            if group and point.address - end <= gap and max(end, point_end) - start <= limit:
                group.append(point)
                end = max(end, point_end)
                continue
            if group:
                blocks.append(_Block(table, start, end - start, tuple(group)))
            group, start, end = [point], point.address, point_end
        if group:
            blocks.append(_Block(table, start, end - start, tuple(group)))
    return blocks


#: A batch split after an "illegal address" is tried whole again after this many of its polls, doubling
#: (up to L{REJOIN_MAX}) each time the whole read is refused again.
REJOIN_AFTER = 10
REJOIN_MAX = 640


class TargetUnreachable(DeviceUnreachable):
    """The gateway answers, but not the unit behind it (0x0A, 0x0B on every read): its points are down.

    The shared connection stays open for the other units.
    """

    def __init__(self, message: str, errors: Counter[str]):
        super().__init__(message)
        #: The refusals that showed it, by reason.
        self.errors = errors


@dataclass(slots=True)
class _Batch:
    """A planned read, when it is next due, and whether an "illegal address" has split it into parts."""

    whole: _Block
    interval: float
    due: float = 0.0
    #: The single-point reads used while the whole read is refused; None: read whole.
    parts: list[_Block] | None = None
    rejoin_in: int = 0
    rejoin_after: int = REJOIN_AFTER
    ids: tuple[str, ...] = field(default=())


@dataclass(slots=True)
class _Outcome:
    """What one poll got: samples, ids that failed, ids read well, failures by reason, gateway refusals."""

    samples: list[Sample] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    reads: int = 0
    unreached: int = 0


class ModbusProducer:
    """Polls one Modbus unit id through a shared gateway connection (pymodbus's synchronous client).

    Every source whose device sits behind the same host and port shares one
    TCP connection (L{hvac_push.sources.modbus_gateway}); C{gateways} is the
    pool to borrow it from (the process's by default, or one made with
    C{client_factory(host, port, timeout)}). C{initial_backoff}/C{max_backoff}
    pace reconnection attempts; C{retries} and C{retry_delay} how often and
    how soon a read refused with a transient exception (busy, gateway path
    unavailable, gateway target failed to respond) is tried again within a poll.
    """

    def __init__(
        self,
        name: str,
        host: str,
        points: Sequence[ModbusPoint],
        *,
        port: int = 502,
        unit_id: int = 1,
        poll_interval: float = 1.0,
        timeout: float = 2.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        retries: int = 2,
        retry_delay: float = 0.1,
        rejoin_after: int = REJOIN_AFTER,
        client_factory: Callable[[str, int, float], Any] | None = None,
        gateways: GatewayPool | None = None,
    ):
        if not points:
            raise ValueError(f"modbus source {name}: no points to poll")
        if not 0 <= unit_id <= 255:
            raise ValueError(f"modbus source {name}: unit id must be 0..255")
        if not poll_interval > 0 or not timeout > 0:
            raise ValueError(f"modbus source {name}: poll interval and timeout must be > 0")
        if retries < 0 or retry_delay < 0 or rejoin_after < 1:
            raise ValueError(f"modbus source {name}: retries, retry_delay must be >= 0 and rejoin_after >= 1")
        self.name = name
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.points = tuple(points)
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.retries = retries
        self.retry_delay = retry_delay
        self.rejoin_after = rejoin_after
        self.gateways = gateways or (GatewayPool(client_factory) if client_factory is not None else GATEWAYS)
        self._batches = self._plan()
        #: Counters, readable from any thread (for health pages and tests).
        self.polls = 0
        self.failures = 0
        self.connected = False

    def _plan(self) -> list[_Batch]:
        """The batches: points grouped by poll interval, then into as few reads as the limits allow."""
        by_interval: dict[float, list[ModbusPoint]] = {}
        for point in self.points:
            by_interval.setdefault(point.interval or self.poll_interval, []).append(point)
        return [
            _Batch(block, interval, rejoin_after=self.rejoin_after, ids=tuple(p.point_id for p in block.points))
            for interval in sorted(by_interval)
            for block in plan_reads(by_interval[interval])
        ]

    def read_plan(self) -> list[tuple[str, int, int]]:
        """The requests one full poll makes now, as (table, address, count): for tests and tools."""
        return [(b.table, b.address, b.count) for batch in self._batches for b in (batch.parts or [batch.whole])]

    def run(self, publish: Callable[[Sequence[Sample]], None], stop: threading.Event) -> None:
        """Poll until C{stop} is set; an unreachable device marks its points C{down} and backs off.

        A point whose read is refused (a Modbus exception that retries did not
        cure), or whose value cannot be carried (NaN), is C{fault}. Through a
        supervisor's C{publish} (L{hvac_push.sources.supervisor.ProducerLink})
        it also reports whether the device is reached, and counts failed reads
        by reason.
        """
        from hvac_push.sources.modbus_log import route_pymodbus_logs

        route_pymodbus_logs()
        ids = [p.point_id for p in self.points]
        backoff = Backoff(self.initial_backoff, max(self.initial_backoff, self.max_backoff))
        self._batches = batches = self._plan()  # a restart starts from the whole reads
        point_faults: set[str] = set()
        states = PointStates()
        #: L{None} until the first poll's outcome, then whether the device answered.
        reachable: bool | None = None
        gateway = self.gateways.acquire(self.host, self.port, self.timeout)
        try:
            while not stop.is_set():
                now = time.monotonic()
                due = [b for b in batches if b.due <= now]
                if not due:  # woken a hair early
                    stop.wait(max(0.001, min(b.due for b in batches) - now))
                    continue
                try:
                    outcome = self._poll(gateway, due, stop)
                except DeviceUnreachable as e:
                    self.connected = False
                    self.failures += 1
                    if isinstance(e, TargetUnreachable):
                        for reason, count in e.errors.items():
                            count_error(publish, reason, count)
                    else:
                        count_error(publish, "unreachable")
                    delay = backoff.next()
                    if reachable is not False:
                        reachable = False
                        point_faults = set()  # all down now; a bad register is found again once back
                        report_connection(publish, str(e))
                        states.mark(publish, ids, "down")
                        log.warn(
                            "modbus {name} ({host}:{port} unit {unit}): {error}; its points are down, retrying",
                            name=self.name, host=self.host, port=self.port, unit=self.unit_id, error=str(e),
                        )
                    for batch in batches:
                        batch.due = 0.0  # once back, everything is read at once
                    stop.wait(delay)
                    continue
                self.connected = True
                self.polls += 1
                backoff.reset()
                for batch in due:
                    batch.due = max(batch.due + batch.interval, now) if batch.due else now + batch.interval
                for reason, count in outcome.errors.items():
                    count_error(publish, reason, count)
                if reachable is not True:
                    if reachable is False:
                        log.info(
                            "modbus {name} ({host}:{port} unit {unit}) is back",
                            name=self.name, host=self.host, port=self.port, unit=self.unit_id,
                        )
                    reachable = True
                    report_connection(publish, None)
                if outcome.samples:
                    states.remember(outcome.samples)
                    publish(outcome.samples)
                newly = outcome.failed - point_faults
                if newly:
                    states.mark(publish, newly, "fault")
                point_faults = (point_faults - outcome.read) | outcome.failed
                remaining = min(b.due for b in batches) - time.monotonic()
                if remaining > 0:
                    stop.wait(remaining)
        finally:
            self.gateways.release(gateway)

    def _poll(self, gateway: Gateway, due: Sequence[_Batch], stop: threading.Event) -> _Outcome:
        """Read the batches that are due (raises L{DeviceUnreachable} when the device or its unit is gone)."""
        outcome = _Outcome()
        for batch in due:
            if stop.is_set():
                break
            self._read_batch(gateway, batch, stop, outcome)
        if outcome.reads and outcome.unreached == outcome.reads:
            raise TargetUnreachable(
                f"gateway {gateway.address} cannot reach unit {self.unit_id} ({', '.join(sorted(outcome.errors))})",
                outcome.errors,
            )
        return outcome

    def _read_batch(self, gateway: Gateway, batch: _Batch, stop: threading.Event, outcome: _Outcome) -> None:
        """One batch: whole, or (after an "illegal address") by parts, trying it whole again now and then."""
        if batch.parts is not None:
            batch.rejoin_in -= 1
            if batch.rejoin_in > 0:
                self._read_parts(gateway, batch.parts, stop, outcome)
                return
        words = self._read(gateway, batch.whole, stop, outcome)
        if isinstance(words, list):
            if batch.parts is not None:
                log.info(
                    "modbus {name}: {table} {address}+{count} is read whole again",
                    name=self.name, table=batch.whole.table, address=batch.whole.address, count=batch.whole.count,
                )
            batch.parts, batch.rejoin_after = None, self.rejoin_after
            self._decode_into(batch.whole, words, outcome)
            return
        if words == ILLEGAL_ADDRESS and len(batch.whole.points) > 1:
            # One of the points is not there: read them one by one to find it; try whole again later.
            if batch.parts is not None:
                batch.rejoin_after = min(batch.rejoin_after * 2, REJOIN_MAX)
            batch.parts = plan_reads(batch.whole.points, gap=-1)
            batch.rejoin_in = batch.rejoin_after
            self._read_parts(gateway, batch.parts, stop, outcome)
            return
        outcome.failed.update(batch.ids)

    def _read_parts(self, gateway: Gateway, parts: Sequence[_Block], stop: threading.Event, outcome: _Outcome) -> None:
        for part in parts:
            if stop.is_set():
                return
            words = self._read(gateway, part, stop, outcome)
            if isinstance(words, list):
                self._decode_into(part, words, outcome)
            else:
                outcome.failed.update(p.point_id for p in part.points)

    def _read(
        self, gateway: Gateway, block: _Block, stop: threading.Event, outcome: _Outcome
    ) -> list[int] | list[bool] | int:
        """The block's raw words, or the exception code it was refused with (after retrying transient ones)."""
        code = 0
        for attempt in range(self.retries + 1):
            if attempt:
                stop.wait(self.retry_delay * attempt)
                if stop.is_set():
                    break
            reply = gateway.read(block.table, block.address, block.count, self.unit_id)
            if reply.values is not None:
                outcome.reads += 1
                return reply.values
            code = reply.code or 0
            outcome.errors[exception_reason(code)] += 1
            if code not in TRANSIENT:
                break
        outcome.reads += 1
        if code in GATEWAY_CODES:
            outcome.unreached += 1
        return code

    def _decode_into(self, block: _Block, words: Sequence[int] | Sequence[bool], outcome: _Outcome) -> None:
        now = time.time()
        for point in block.points:
            start = point.address - block.address
            try:
                value = decode(point, words[start : start + point.count])
            except (ValueError, struct.error, IndexError):
                outcome.errors["decode"] += 1
                outcome.failed.add(point.point_id)
                continue
            outcome.read.add(point.point_id)
            outcome.samples.append(Sample(point.point_id, value, point.unit, now))


__all__ = [
    "DeviceUnreachable", "ModbusPoint", "ModbusProducer", "TargetUnreachable", "decode", "encode", "plan_reads",
]
