"""hvac_push.ops.cluster and hvac_push.ops.tap: a collector's --publish links, several of them, and their honest health.

Against real mosquitto brokers started by the test: two --publish options
both publish; a broker that refuses the collector, or a port nobody listens
on, is logged (not on every retry) and shows in /healthz's checks as not ok,
with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted

from hvac_push.ops.cluster import MqttBridge
from hvac_push.ops.tap import Options, makeService
from tests.brokers import Mosquitto
from tests.wsprobe import closed_port  # noqa: F401 (fixture)
from tests.helpers import eventually
from tests.logwatch import watch_log


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def collector(*publish: str) -> Any:
    options = Options()
    argv = ["--listen", "tcp:0:interface=127.0.0.1", "--sim-seed", "3", "--sim-units", "1", "--sim-rate", "20"]
    for url in publish:
        argv += ["--publish", url]
    options.parseOptions(argv)
    return makeService(options, reactor=reactor())


def bridge(service: Any, name: str) -> MqttBridge:
    found = service.getServiceNamed(name)
    assert isinstance(found, MqttBridge)
    return found


@pytest_twisted.ensureDeferred
async def test_two_publish_options_publish_to_both_brokers(tmp_path: Path) -> None:
    first, second = Mosquitto(tmp_path), Mosquitto(tmp_path)
    first.start()
    second.start()
    service = collector(f"mqtt://127.0.0.1:{first.port}/a", f"mqtt://127.0.0.1:{second.port}/b")
    service.startService()
    try:
        one, two = bridge(service, "mqtt-publish.1"), bridge(service, "mqtt-publish.2")
        await eventually(lambda: one.published > 0 and two.published > 0, timeout=10)
        checks = service.health()["checks"]
        assert checks["mqtt-publish.1"]["ok"] is True and checks["mqtt-publish.2"]["ok"] is True
        assert checks["mqtt-publish.1"]["detail"]["error"] is None
    finally:
        await service.stopService()
        first.kill()
        second.kill()


@pytest_twisted.ensureDeferred
async def test_a_refused_or_unreachable_broker_is_logged_and_fails_its_health_check(
    tmp_path: Path, closed_port: int
) -> None:
    strict = Mosquitto(tmp_path, allow_anonymous=False)  # no password file: every login is refused
    strict.start()
    closed = closed_port
    with watch_log() as log:
        service = collector(f"mqtt://someone:Wr0ngPass@127.0.0.1:{strict.port}/a", f"mqtt://127.0.0.1:{closed}/b")
        service.startService()
        try:
            refused, unreachable = bridge(service, "mqtt-publish.1"), bridge(service, "mqtt-publish.2")
            try:
                await eventually(lambda: (refused.last_error or "").startswith("connection refused")
                                 and unreachable.last_error not in (None, "not connected yet"), timeout=10)
            except AssertionError:
                raise AssertionError((refused.last_error, unreachable.last_error, log.text()[-3000:]))
            health = service.health()
            assert health["ready"] is False
            for name in ("mqtt-publish.1", "mqtt-publish.2"):
                check = health["checks"][name]
                assert check["ok"] is False and check["detail"]["connected"] is False and check["detail"]["error"]
        finally:
            await service.stopService()
            strict.kill()
    lines = [line for line in log.text().splitlines() if "mqtt publish:" in line]
    assert any(f"127.0.0.1:{strict.port}" in line and "refused" in line for line in lines), lines
    assert any(f"127.0.0.1:{closed}" in line for line in lines), lines
    assert len(lines) == 2, lines
    assert "Wr0ngPass" not in log.text()
