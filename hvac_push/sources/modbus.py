"""Modbus TCP source: one producer (one thread, one synchronous client) per device.

Each poll reads the device's points in as few requests as possible (nearby
addresses of one table are read together), decodes them with our own
C{struct} code and hands them over as one batch. A device that cannot be
reached, or stops answering, turns all its points to C{down} and is retried
with an exponential backoff; a point whose read gets a Modbus exception
response, or whose value cannot be carried (a NaN float), turns C{fault}
alone. The next good reading of a point carries status C{ok} again. Failed
reads are counted by reason: C{unreachable}, C{exception}, C{decode}.
Nothing here runs on, or blocks, the reactor thread.
"""

from __future__ import annotations

import inspect
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from hvac_push.core.points import Sample
from hvac_push.sources.common import Backoff, PointStates, log
from hvac_push.sources.modbus_codec import TABLES, ModbusPoint, decode, encode
from hvac_push.sources.supervisor import count_error, report_connection

_READ = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}
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


class DeviceUnreachable(Exception):
    """The device cannot be connected to, or stopped answering."""


def _unit_kwarg(method: Callable[..., Any]) -> str:
    """The keyword a pymodbus read method takes for the unit id (it was renamed across versions)."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return "device_id"
    for name in ("device_id", "slave", "unit"):
        if name in params:
            return name
    return "device_id"


class ModbusProducer:
    """Polls one Modbus TCP device with pymodbus's synchronous C{ModbusTcpClient}.

    C{client_factory(host, port, timeout)} makes the client (pymodbus's by
    default); C{initial_backoff}/C{max_backoff} pace reconnection attempts.
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
        client_factory: Callable[[str, int, float], Any] | None = None,
    ):
        if not points:
            raise ValueError(f"modbus source {name}: no points to poll")
        if not 0 <= unit_id <= 255:
            raise ValueError(f"modbus source {name}: unit id must be 0..255")
        if not poll_interval > 0 or not timeout > 0:
            raise ValueError(f"modbus source {name}: poll interval and timeout must be > 0")
        self.name = name
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.points = tuple(points)
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._client_factory = client_factory or _pymodbus_client
        self._blocks = plan_reads(self.points)
        self._unit_keyword: dict[str, str] = {}
        #: Counters, readable from any thread (for health pages and tests).
        self.polls = 0
        self.failures = 0
        self.connected = False

    def run(self, publish: Callable[[Sequence[Sample]], None], stop: threading.Event) -> None:
        """Poll until C{stop} is set; an unreachable device marks its points C{down} and backs off.

        A point whose read gets an exception response, or whose value cannot
        be carried (NaN), is C{fault}. Through a supervisor's C{publish}
        (L{hvac_push.sources.supervisor.ProducerLink}) it also reports whether
        the device is reached, and counts failed reads by reason.
        """
        ids = [p.point_id for p in self.points]
        backoff = Backoff(self.initial_backoff, max(self.initial_backoff, self.max_backoff))
        client = self._client_factory(self.host, self.port, self.timeout)
        point_faults: set[str] = set()
        states = PointStates()
        #: L{None} until the first poll's outcome, then whether the device answered.
        reachable: bool | None = None
        try:
            while not stop.is_set():
                started = time.monotonic()
                errors: Counter[str] = Counter()
                try:
                    samples, failed = self._poll(client, stop, errors)
                except DeviceUnreachable as e:
                    self.connected = False
                    self.failures += 1
                    count_error(publish, "unreachable")
                    _close(client)
                    delay = backoff.next()
                    if reachable is not False:
                        reachable = False
                        point_faults = set()  # all down now; a bad register is found again once back
                        report_connection(publish, str(e))
                        states.mark(publish, ids, "down")
                        log.warn(
                            "modbus {name} ({host}:{port}): {error}; its points are down, retrying",
                            name=self.name, host=self.host, port=self.port, error=str(e),
                        )
                    stop.wait(delay)
                    continue
                self.connected = True
                self.polls += 1
                backoff.reset()
                for reason, count in errors.items():
                    count_error(publish, reason, count)
                if reachable is not True:
                    if reachable is False:
                        log.info("modbus {name} ({host}:{port}) is back", name=self.name, host=self.host, port=self.port)
                    reachable = True
                    report_connection(publish, None)
                if samples:
                    states.remember(samples)
                    publish(samples)
                newly = failed - point_faults
                if newly:
                    states.mark(publish, newly, "fault")
                point_faults = failed
                remaining = self.poll_interval - (time.monotonic() - started)
                if remaining > 0:
                    stop.wait(remaining)
        finally:
            _close(client)

    def _poll(self, client: Any, stop: threading.Event, errors: Counter[str]) -> tuple[list[Sample], set[str]]:
        """One pass over every block: the samples read, and the ids that failed (counted by reason in C{errors})."""
        try:
            if not client.connect():
                raise DeviceUnreachable(f"cannot connect to {self.host}:{self.port}")
        except DeviceUnreachable:
            raise
        except Exception as e:
            raise DeviceUnreachable(f"cannot connect: {e}") from e
        samples: list[Sample] = []
        failed: set[str] = set()
        blocks = list(self._blocks)
        split: list[_Block] = []
        for block in blocks:
            if stop.is_set():
                break
            words = self._read(client, block)
            if words is None:
                errors["exception"] += 1
                # An exception response for a merged read: read its points one by one
                # to find the bad one(s), and keep that split for the next polls.
                if len(block.points) == 1:
                    failed.add(block.points[0].point_id)
                    split.append(block)
                    continue
                singles = plan_reads(block.points, gap=-1)
                split.extend(singles)
                for single in singles:
                    got = self._read(client, single)
                    if got is None:
                        errors["exception"] += 1
                        failed.update(p.point_id for p in single.points)
                    else:
                        self._decode_into(single, got, samples, failed, errors)
                continue
            split.append(block)
            self._decode_into(block, words, samples, failed, errors)
        if len(split) != len(blocks) and not stop.is_set():
            self._blocks = split
        return samples, failed

    def _read(self, client: Any, block: _Block) -> list[int] | list[bool] | None:
        """The block's raw words, or L{None} on a Modbus exception response."""
        method = getattr(client, _READ[block.table])
        keyword = self._unit_keyword.get(block.table)
        if keyword is None:
            keyword = self._unit_keyword[block.table] = _unit_kwarg(method)
        kwargs = {keyword: self.unit_id, "count": block.count}
        try:
            response = method(block.address, **kwargs)
        except Exception as e:
            raise DeviceUnreachable(f"no answer: {e}") from e
        if response is None or response.isError():
            return None
        if block.table in ("coil", "discrete"):
            return list(response.bits[: block.count])
        registers = list(response.registers)
        if len(registers) < block.count:
            return None
        return registers

    def _decode_into(
        self,
        block: _Block,
        words: Sequence[int] | Sequence[bool],
        samples: list[Sample],
        failed: set[str],
        errors: Counter[str],
    ) -> None:
        now = time.time()
        for point in block.points:
            start = point.address - block.address
            try:
                value = decode(point, words[start : start + point.count])
            except (ValueError, struct.error, IndexError):
                errors["decode"] += 1
                failed.add(point.point_id)
                continue
            samples.append(Sample(point.point_id, value, point.unit, now))


def _close(client: Any) -> None:
    try:
        client.close()
    except Exception:
        pass


def _pymodbus_client(host: str, port: int, timeout: float) -> Any:
    from pymodbus.client import ModbusTcpClient

    return ModbusTcpClient(host, port=port, timeout=timeout, retries=0)


__all__ = ["ModbusPoint", "ModbusProducer", "decode", "encode", "plan_reads"]
