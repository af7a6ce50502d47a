"""hvac_push.ops.metrics and hvac_push.ops.health: /metrics and /healthz over a real listener, and the cheap
counters behind them."""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from hvac_push.transport.fanout import PushServerFactory
from hvac_push.transport.rounds import ChangeView, DeliveryRounds
from hvac_push.ops.health import Readiness
from hvac_push.ops.metrics import Buckets, denied_reason
from hvac_push.core.points import Point, Sample
from hvac_push.transport.protocol import PushServerProtocol
from hvac_push.testing import ScriptedProducer, connect, handshake_status
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, within
from tests.logwatch import watch_log


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    from twisted.web.client import Agent, HTTPConnectionPool, readBody

    agent = Agent(reactor(), pool=HTTPConnectionPool(reactor(), persistent=False))
    response = await within(5, agent.request(b"GET", f"http://127.0.0.1:{port}{path}".encode()))
    body = await within(5, readBody(response))
    headers = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    return response.code, headers, body


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, keyed by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


# -- the histogram and the collector, without sockets -------------------------


def test_buckets_count_each_value_once_in_the_first_bucket_that_holds_it():
    h = Buckets([0.1, 0.5, 1.0])
    for value in (0.05, 0.1, 0.3, 1.0, 7.0):
        h.observe(value)
    assert h.counts == [2, 1, 1, 1] and h.count == 5
    assert h.sum == pytest.approx(8.45)
    assert h.cumulative() == [("0.1", 2), ("0.5", 3), ("1.0", 4), ("+Inf", 5)]


def test_latency_ages_skip_points_that_are_not_ok_and_clamp_future_timestamps():
    h = Buckets([0.01, 1.0])
    points = [
        Point("a/b/ok", 1.0, "", 99.995, "ok", 1),
        Point("a/b/stale", 1.0, "", 10.0, "stale", 2),
        Point("a/b/ahead", 1.0, "", 100.5, "ok", 3),
        Point("a/b/late", 1.0, "", 98.0, "ok", 4),
    ]
    h.observe_ages(100.0, points)
    assert h.counts == [2, 0, 1]
    assert h.sum == pytest.approx(2.005)


def test_observing_counts_each_value_in_its_bucket_and_the_sum():
    # Its cost is measured by benchmarks/metrics_observe.py (docs/performance.md), not asserted here.
    h = Buckets([0.001 * 2**i for i in range(14)])
    for i in range(1000):
        h.observe(i * 1e-5)
    assert sum(h.counts) == 1000
    assert h.counts[0] == 101  # 0 .. 0.001 inclusive
    assert h.sum == pytest.approx(sum(i * 1e-5 for i in range(1000)))


def test_denied_codes_map_to_reasons():
    assert [denied_reason(c) for c in (403, 503, 400, 401, 429, 500)] == [
        "origin", "capacity", "bad_request", "unauthorized", "rate_limited", "error",
    ]
    assert denied_reason(418) == "http_418"


def test_each_service_has_its_own_registry():
    from prometheus_client import REGISTRY, generate_latest
    from twisted.internet.testing import MemoryReactorClock

    from hvac_push.ops.service import PushService

    first, second = PushService(MemoryReactorClock()), PushService(MemoryReactorClock())
    first.hub.publish(Sample("a/b/c", 1.0, "", 1.0))
    first.factory.stats.skipped_paused = 3
    one, two = samples(generate_latest(first.metrics_registry)), samples(generate_latest(second.metrics_registry))
    assert one[("hvacpush_hub_version", ())] == 1 and two[("hvacpush_hub_version", ())] == 0
    assert one[("hvacpush_clients_skipped_slow_total", ())] == 3
    assert b"hvacpush" not in generate_latest(REGISTRY)


def test_the_hot_path_does_not_log_and_autobahn_debug_logging_is_off():
    from twisted.internet.testing import MemoryReactorClock
    from txaio.tx import get_global_log_level  # what txaio.get_global_log_level is under Twisted (set at run time)

    from hvac_push.core.hub import Hub

    hot: list[Callable[..., object]] = [
        PushServerFactory.flush, PushServerFactory.tick, PushServerFactory.wake, PushServerFactory._flush_now,
        PushServerProtocol.write_frame, PushServerProtocol.send_prepared, PushServerProtocol.send_bytes,
        PushServerProtocol.onMessage, PushServerProtocol.handle, Buckets.observe, Buckets.observe_ages,
        DeliveryRounds._run_slice, DeliveryRounds._deliver, ChangeView.changed,
    ]
    for function in hot:
        source = inspect.getsource(function)
        assert "log." not in source and "_log" not in source and "print(" not in source, function.__qualname__
    factory = PushServerFactory(Hub(), MemoryReactorClock())
    assert not factory.logOctets and not factory.logFrames and not factory.trackTimings
    assert get_global_log_level() not in ("debug", "trace")


# -- end to end ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_metrics_page_reports_what_happened_over_real_sockets():
    producer = ScriptedProducer([[Sample("plant/ahu-1/fan_speed", 40.0, "%")]], name="fans")
    running = await start_server([producer], allowed_origins=["https://ops.example"], max_connections=2)
    try:
        r = reactor()
        assert await within(5, handshake_status(r, running.port, headers={"Origin": "https://evil.example"})) == 403
        assert await within(5, handshake_status(r, running.port, "/ws?points=a/%23/b")) == 400
        await eventually(lambda: len(running.hub) == 1)
        clients = [await within(5, connect(r, running.port)) for _ in range(2)]
        assert await within(5, handshake_status(r, running.port)) == 503
        for client in clients:
            await within(5, client.next("snapshot"))
        running.service.publisher.publish("plant/ahu-1/fan_speed", 55.0, "%")
        for client in clients:
            await within(5, client.next("update"))
        await eventually(lambda: running.service.producers[0].status.state == "running")

        code, headers, body = await http_get(running.port, "/metrics")
        assert code == 200 and headers["content-type"].startswith("text/plain")
        found = samples(body)
        assert found[("hvacpush_clients", ())] == 2
        assert found[("hvacpush_connections", ())] >= 2
        assert found[("hvacpush_handshakes_accepted_total", ())] == 2
        denied = {labels: v for (name, labels), v in found.items() if name == "hvacpush_handshakes_denied_total"}
        assert denied[(("code", "403"), ("reason", "origin"))] == 1
        assert denied[(("code", "400"), ("reason", "bad_request"))] == 1
        assert denied[(("code", "503"), ("reason", "capacity"))] == 1
        assert denied[(("code", "401"), ("reason", "unauthorized"))] == 0
        assert found[("hvacpush_messages_sent_total", ())] >= 2
        assert found[("hvacpush_bytes_sent_total", ())] > 0
        assert found[("hvacpush_ticks_total", ())] >= 0
        assert found[("hvacpush_flush_duration_seconds_count", ())] >= 1
        latency_count = found[("hvacpush_delivery_latency_seconds_count", ())]
        # Both clients share one group frame: one observation for the one changed point.
        assert latency_count == found[("hvacpush_frames_encoded_total", ())] >= 1
        assert found[("hvacpush_delivery_latency_seconds_bucket", (("le", "+Inf"),))] == latency_count
        assert found[("hvacpush_hub_version", ())] == running.hub.version
        assert found[("hvacpush_points", (("status", "ok"),))] == 1
        assert found[("hvacpush_producer_state", (("producer", "fans"), ("state", "running")))] == 1
        assert found[("hvacpush_producer_state", (("producer", "fans"), ("state", "backoff")))] == 0
        assert found[("hvacpush_producer_restarts_total", (("producer", "fans"),))] == 0
        assert found[("hvacpush_ready", ())] == 1
        for client in clients:
            client.sendClose()
            await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_healthz_is_503_until_started_and_ready_then_200_then_503_once_stopping():
    from twisted.internet.endpoints import serverFromString

    from hvac_push.ops.service import PushService

    service = PushService(reactor(), interval=0.05)
    port = await serverFromString(reactor(), "tcp:0:interface=127.0.0.1").listen(service.site())
    number = port.getHost().port
    try:
        code, _, body = await http_get(number, "/healthz")
        assert code == 503
        assert json.loads(body)["checks"]["started"] == {"ok": False, "detail": "stopped"}

        synced = {"done": False}
        service.add_readiness_check("initial-sync", lambda: (synced["done"], "synced" if synced["done"] else "waiting"))
        service.startService()
        code, headers, body = await http_get(number, "/healthz")
        health = json.loads(body)
        assert code == 503 and headers["content-type"] == "application/json"
        assert health["ready"] is False
        assert health["checks"] == {
            "started": {"ok": True, "detail": "running"},
            "initial-sync": {"ok": False, "detail": "waiting"},
        }

        synced["done"] = True
        code, _, body = await http_get(number, "/healthz")
        assert code == 200 and json.loads(body)["ready"] is True

        def broken() -> tuple[bool, str]:
            raise RuntimeError("broker unreachable")

        service.add_readiness_check("broker", broken)
        code, _, body = await http_get(number, "/healthz")
        assert code == 503
        assert json.loads(body)["checks"]["broker"]["detail"] == "check failed: RuntimeError: broker unreachable"
        service.remove_readiness_check("broker")
        assert (await http_get(number, "/healthz"))[0] == 200

        stopping = service.stopService()
        code, _, body = await http_get(number, "/healthz")
        assert code == 503 and json.loads(body)["checks"]["started"]["ok"] is False
        await stopping
    finally:
        await port.stopListening()


def test_readiness_rejects_nameless_or_uncallable_checks_and_logs_a_raising_one_once():
    readiness = Readiness()
    with pytest.raises(ValueError):
        readiness.add("", lambda: (True, ""))
    with pytest.raises(TypeError):
        readiness.add("x", "not callable")  # type: ignore[arg-type]

    with watch_log() as log:
        readiness.add("flaky", lambda: 1 / 0)  # type: ignore[arg-type,return-value]
        for _ in range(3):
            ready, checks = readiness.check()
            assert not ready and checks["flaky"]["ok"] is False
    assert len([e for e in log.events if e.get("log_failure") is not None]) == 1
