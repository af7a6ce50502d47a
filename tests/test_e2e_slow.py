"""hvac_push.transport.guard and hvac_push.transport.fanout with slow consumers over real sockets: conflate,
never queue; and close (1013) the ones that stay stuck.

The figures are printed (run with -s to see them); only generous sanity
bounds are asserted, never tight timings.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from typing import Callable

import psutil
import pytest_twisted

from hvac_push.transport.limits import Limits
from hvac_push.core.points import EVERYTHING, Sample
from hvac_push.testing import PushClient, connect
from hvac_push.transport.wire import encode_point
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, sleep, within
from tests.logwatch import watch_log
from tests.nbsock import CLOSE, TEXT, RawSocket, close_code, frame

POINTS = 200
ROUNDS = 50


def reactor():
    from twisted.internet import reactor

    return reactor


class TimedClient(PushClient):
    """Records when each hub version arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: dict[int, float] = {}
        self.last_version = 0

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        now = time.perf_counter()
        message = json.loads(payload)
        if message.get("type") in ("snapshot", "update"):
            self.last_version = message["version"]
            self.arrivals[message["version"]] = now


def round_samples(round_: int) -> list[Sample]:
    units = ("chiller", "ahu", "crac", "boiler")
    return [
        Sample(f"plant/{units[i % 4]}-{i // 4}/p{i % 7}", round(round_ * 0.1 + i * 0.01, 3), "°C", 1000.0 + round_)
        for i in range(POINTS)
    ]


def server_side(running, local_port):
    for proto in running.factory.connections:
        peer = proto.transport.getPeer() if proto.transport is not None else None
        if peer is not None and peer.port == local_port:
            return proto
    raise LookupError(local_port)


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest_twisted.ensureDeferred
async def test_a_reader_that_stops_costs_bounded_memory_and_gets_one_conflated_catch_up():
    r = reactor()
    running = await start_server(limits=Limits(slow_client_timeout=120), interval=0.05)
    hub = running.hub
    try:
        with watch_log() as log:
            hub.publish_many(round_samples(-1))
            fast = [await within(5, connect(r, running.port, client=TimedClient)) for _ in range(3)]
            slow = RawSocket(running.port, rcvbuf=16 * 1024)
            assert await slow.upgrade() == 101
            view: dict[str, dict] = {}
            snapshot = await slow.read_json()
            assert snapshot["type"] == "snapshot"
            view.update(snapshot["points"])
            slow_proto = server_side(running, slow.sock.getsockname()[1])
            granted_sndbuf = slow_proto.transport.socket.getsockopt(1, 7)  # SOL_SOCKET, SO_SNDBUF
            await eventually(lambda: all(c.last_version == hub.version for c in fast))
            read_before = slow.received_bytes

            rss_before = rss()
            latencies: list[float] = []
            paused_at_round = None
            started = time.perf_counter()
            for round_ in range(ROUNDS):
                # One bounded batch per round, with reactor turns in between.
                published = time.perf_counter()
                hub.publish_many(round_samples(round_))
                target = hub.version
                await within(5, _until(lambda: all(c.last_version >= target for c in fast)))
                latencies += [c.arrivals[target] - published for c in fast]
                if paused_at_round is None and slow_proto.paused:
                    paused_at_round = round_
            publish_seconds = time.perf_counter() - started
            rss_after = rss()
            stats = running.factory.stats

            # The stuck reader was paused early and never queued the backlog.
            assert paused_at_round is not None and paused_at_round < ROUNDS // 2
            assert slow_proto.paused and stats.skipped_paused > 0
            buffered = len(slow_proto.transport.dataBuffer) + slow_proto.transport._tempDataLen
            growth_mb = (rss_after - rss_before) / 1e6
            assert growth_mb < 50

            # Reading again: what is in the pipes, then one conflated update, and an exact view.
            resumed = time.perf_counter()
            messages = 0
            for _ in range(ROUNDS + 10):  # bounded: at most one message per round could be waiting
                if view.get("__version__") == hub.version:
                    break
                message = await slow.read_json(timeout=10)
                messages += 1
                view.update(message["points"])
                view["__version__"] = message["version"]
            catch_up = time.perf_counter() - resumed
            assert view.pop("__version__") == hub.version
            expected = {p.point_id: encode_point(p) for p in hub.points(EVERYTHING)}
            assert view == expected
            assert messages < ROUNDS  # conflated: not one message per round

            print(
                f"\nslow consumer, {POINTS} points x {ROUNDS} rounds = {POINTS * ROUNDS} updates "
                f"published in {publish_seconds:.2f}s"
                f"\n  SO_SNDBUF granted {granted_sndbuf} B; paused after round {paused_at_round}; "
                f"{buffered} B waiting in the transport when done; "
                f"{stats.skipped_paused} deliveries skipped while paused"
                f"\n  RSS {rss_before / 1e6:.1f} MB -> {rss_after / 1e6:.1f} MB (growth {growth_mb:+.2f} MB)"
                f"\n  other clients ({len(fast)}): every round received; latency p50 "
                f"{statistics.median(latencies) * 1e3:.2f} ms, p99 {percentile(latencies, 0.99) * 1e3:.2f} ms, "
                f"max {max(latencies) * 1e3:.2f} ms"
                f"\n  slow client: {read_before} B before stopping; caught up in {catch_up * 1e3:.0f} ms with "
                f"{messages} messages ({slow.received_bytes - read_before} B) instead of {ROUNDS}; view == hub"
            )
            assert max(latencies) < 5.0  # sanity only
            slow.close()
            for client in fast:
                client.sendClose()
                await within(5, client.closed)
        assert not log.failures()
    finally:
        await stop_server(running)


async def _until(predicate: Callable[[], object], step: float = 0.001) -> None:
    while not predicate():
        await sleep(step)


@pytest_twisted.ensureDeferred
async def test_a_client_paused_too_long_is_closed_with_1013_then_aborted_if_it_never_reads():
    r = reactor()
    running = await start_server(
        limits=Limits(slow_client_timeout=0.5), interval=0.05, ws_options={"closeHandshakeTimeout": 2.0}
    )
    hub = running.hub
    try:
        with watch_log() as log:
            bystander = await within(5, connect(r, running.port, client=TimedClient))
            reads_later = RawSocket(running.port, rcvbuf=16 * 1024)
            never_reads = RawSocket(running.port, rcvbuf=16 * 1024)
            for raw in (reads_later, never_reads):
                assert await raw.upgrade() == 101
                await raw.read_json()
            later_proto = server_side(running, reads_later.sock.getsockname()[1])
            never_proto = server_side(running, never_reads.sock.getsockname()[1])

            paused_at = None
            for round_ in range(200):  # bounded: stop once both are paused
                hub.publish_many(round_samples(round_))
                target = hub.version
                await within(5, _until(lambda: bystander.last_version >= target))
                if later_proto.paused and never_proto.paused:
                    paused_at = time.monotonic()
                    break
            assert paused_at is not None, "the readers were never paused"
            await eventually(lambda: running.factory.guard.stats.slow_closes == 2, timeout=5)
            closed_after = time.monotonic() - paused_at

            # The one that reads again finds everything that was queued, then the 1013.
            messages, code = await reads_later.read_until_close(timeout=5)
            assert code == 1013
            await reads_later.send(frame(CLOSE, (1013).to_bytes(2, "big")))
            await reads_later.wait_closed(timeout=5)

            # The one that never reads is dropped once the close grace runs out (Autobahn's
            # closeHandshakeTimeout, with our own abort on the factory's reactor as a backstop).
            await eventually(lambda: never_proto not in running.factory.connections, timeout=6)
            gone_after = time.monotonic() - paused_at
            assert gone_after < 0.5 + 2.0 + 2.0
            assert not running.factory.guard.paused

            # The bystander never noticed.
            hub.publish_many(round_samples(999))
            target = hub.version
            await within(5, _until(lambda: bystander.last_version >= target))
            print(
                f"\nslow-client timeout 0.5 s: both closed (1013) {closed_after:.2f} s after the pause was seen; "
                f"the one that read again got {len(messages)} queued messages then code {code}; "
                f"the one that never read was dropped {gone_after:.2f} s after its pause (close grace 2 s)"
            )
            reads_later.close()
            never_reads.close()
            bystander.sendClose()
            await within(5, bystander.closed)
        assert not log.failures()
    finally:
        await stop_server(running)
