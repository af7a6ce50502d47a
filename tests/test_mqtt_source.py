"""hvac_push.sources.mqtt: the MQTT source against a real mosquitto broker, end to end to a WebSocket client."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from hvac_push.core.points import InvalidPoint
from hvac_push.sources.mqtt import BadPayload, MqttPoint, MqttProducer, TopicMap, parse_payload
from hvac_push.sources.mqtt_client import MqttBroker, MqttTls
from hvac_push.testing import connect
from tests.brokers import Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, until_state, within
from tests.logwatch import watch_log


def reactor():
    from twisted.internet import reactor

    return reactor


# -- payloads and topics -------------------------------------------------------


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"21.5", (21.5, None, None)),
        (b" 7 ", (7, None, None)),
        (b"true", (True, None, None)),
        (b"false", (False, None, None)),
        (b'{"value": 6.5, "ts": 1764000000.25, "unit": "\\u00b0C"}', (6.5, 1764000000.25, "°C")),
        (b'{"value": "auto"}', ("auto", None, None)),
        (b'{"value": 1, "ts": 1764000000250}', (1, 1764000000.25, None)),  # milliseconds
    ],
)
def test_payloads_that_parse(payload, expected):
    assert parse_payload(payload) == expected


@pytest.mark.parametrize(
    "payload, why",
    [
        (b"warm", "not a number, true/false or JSON object"),
        (b"NaN", "NaN is not a value"),
        (b'"text"', "expected a number, true/false or a JSON object"),
        (b"[1, 2]", "expected a number, true/false or a JSON object"),
        (b'{"val": 1}', 'JSON object without "value"'),
        (b'{"value": [1]}', '"value" must be a number'),
        (b'{"value": 1, "ts": "now"}', '"ts" must be a positive number'),
        (b'{"value": 1, "unit": 5}', '"unit" must be a string'),
        (b"\xff\xfe", "not UTF-8"),
        (b"1" * 5000, "larger than 4096 bytes"),
        (b"1e400", "value must be finite"),
    ],
)
def test_payloads_that_do_not(payload, why):
    with pytest.raises(BadPayload) as e:
        parse_payload(payload)
    assert why in str(e.value)


def test_topics_map_to_points_through_the_template_and_exact_topics():
    topics = TopicMap(
        "site-a/+/{site}/{unit}/{point}",
        [MqttPoint("plant/ahu-1/fan", "bms/ahu1/fan", "%"), MqttPoint("plant/ahu-1/supply", None, "°C")],
    )
    assert topics.filters() == ["site-a/+/+/+/+", "bms/ahu1/fan"]
    assert topics.lookup("site-a/x/plant/ahu-1/supply") == ("plant/ahu-1/supply", "°C")
    assert topics.lookup("site-a/x/plant/chiller-9/power") == ("plant/chiller-9/power", "")
    assert topics.lookup("bms/ahu1/fan") == ("plant/ahu-1/fan", "%")
    assert topics.lookup("site-a/x/plant/ahu-1/fan") is None  # it has its own topic
    assert topics.lookup("other/x/plant/ahu-1/supply") is None
    with pytest.raises(InvalidPoint):
        topics.lookup("site-a/x/plant/bad unit/p")
    strict = TopicMap("hvac/{site}/{unit}/{point}", [MqttPoint("p/u/a")], discover=False)
    assert strict.lookup("hvac/p/u/a") == ("p/u/a", "")
    assert strict.lookup("hvac/p/u/b") is None
    only_exact = TopicMap("", [MqttPoint("p/u/a", "x/y")], discover=True)
    assert only_exact.filters() == ["x/y"]
    with pytest.raises(ValueError):
        TopicMap("hvac/{site}/{point}")
    with pytest.raises(ValueError, match="'#' is not allowed"):
        TopicMap("hvac/{site}/{unit}/{point}/#")  # the plant file's rule: one check for both


def test_a_broker_never_shows_its_password():
    from hvac_push.sources.mqtt_client import redact_url

    broker = MqttBroker("10.0.0.5", 1884, "edge", "LeakMe123", MqttTls(ca="/etc/ca.pem"))
    for shown in (repr(broker), str(broker), broker.describe(), repr(MqttProducer("m", broker).broker)):
        assert "LeakMe123" not in shown
    assert "password='***'" in repr(broker) and "password=None" in repr(MqttBroker("h"))
    assert broker.describe() == "mqtts://edge@10.0.0.5:1884"
    assert broker == MqttBroker("10.0.0.5", 1884, "edge", "LeakMe123", MqttTls(ca="/etc/ca.pem"))
    assert broker != MqttBroker("10.0.0.5", 1884, "edge", "other", MqttTls(ca="/etc/ca.pem"))  # a reload sees it
    assert redact_url("mqtt://u:LeakMe123@127.0.0.1:99999/a") == "mqtt://u:***@127.0.0.1:99999/a"
    assert redact_url("mqtts://u:p@ss/w0rd@host/a?ca=/c") == "mqtts://u:***@host/a?ca=/c"
    for unchanged in ("mqtt://u@host:1883/a", "mqtt://host:1883/a", "not a url"):
        assert redact_url(unchanged) == unchanged


# -- against a real broker -----------------------------------------------------


def _producer(
    broker: Mosquitto, *, username: str | None = None, password: str | None = None, tls: MqttTls | None = None, **kw: Any
) -> MqttProducer:
    kw.setdefault("reconnect_min", 0.05)
    kw.setdefault("reconnect_max", 0.2)
    kw.setdefault("keepalive", 5)
    return MqttProducer("mqtt.test", MqttBroker("127.0.0.1", broker.port, username, password, tls), **kw)


async def _publish(broker: Mosquitto, topic: str, payload: str | bytes, retain: bool = False) -> None:
    await deferToThread(broker.publish, topic, payload, retain)



def _status(point_id: str, status: str, value: object = None) -> Callable[[dict[str, Any]], bool]:
    def check(state: dict[str, Any]) -> bool:
        point = state.get(point_id)
        return point is not None and point["status"] == status and (value is None or point["value"] == value)

    return check


@pytest_twisted.ensureDeferred
async def test_published_values_reach_a_websocket_client(mosquitto):
    # A retained message published before we start seeds the state.
    await _publish(mosquitto, "hvac/plant/chiller-1/setpoint", "7.0", retain=True)
    producer = _producer(mosquitto, points=[MqttPoint("plant/ahu-1/fan_speed", "bms/ahu1/fan", "%")])
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        state = await until_state(client, _status("plant/chiller-1/setpoint", "ok", 7.0))
        await eventually(lambda: producer.connected, timeout=5)

        await _publish(mosquitto, "hvac/plant/chiller-1/supply_temp", '{"value": 6.4, "ts": 1764000000.5, "unit": "°C"}')
        state = await until_state(client, _status("plant/chiller-1/supply_temp", "ok", 6.4))
        assert state["plant/chiller-1/supply_temp"]["ts"] == 1764000000.5
        assert state["plant/chiller-1/supply_temp"]["unit"] == "°C"

        await _publish(mosquitto, "bms/ahu1/fan", "62.5")
        state = await until_state(client, _status("plant/ahu-1/fan_speed", "ok", 62.5))
        assert state["plant/ahu-1/fan_speed"]["unit"] == "%"
        await _publish(mosquitto, "hvac/plant/chiller-1/compressor", "true")
        await until_state(client, _status("plant/chiller-1/compressor", "ok", True))
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_malformed_payloads_are_dropped_and_counted_and_serving_goes_on(mosquitto):
    producer = _producer(mosquitto)
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        await eventually(lambda: producer.connected, timeout=5)
        for payload in ("warm", "{broken", '{"val": 3}'):
            await _publish(mosquitto, "hvac/plant/crac-1/supply_temp", payload)
        await _publish(mosquitto, "hvac/plant/bad unit/x", "1")
        await _publish(mosquitto, "hvac/plant/crac-1/supply_temp", "18.5")
        state = await until_state(client, _status("plant/crac-1/supply_temp", "ok", 18.5))
        assert producer.malformed == 4
        assert producer.malformed_by_topic["hvac/plant/crac-1/supply_temp"] == 3
        assert list(state) == ["plant/crac-1/supply_temp"]
        assert running.service.producers[0].status.restarts == 0
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_broker_loss_is_down_after_the_grace_and_its_return_is_ok_while_the_client_stays(mosquitto):
    declared = MqttPoint("plant/ahu-1/supply_temp", unit="°C")
    producer = _producer(mosquitto, points=[declared], failover_grace=0.3)
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port))
        await eventually(lambda: producer.connected, timeout=5)
        await _publish(mosquitto, "hvac/plant/ahu-1/supply_temp", "14.2")
        await _publish(mosquitto, "hvac/plant/ahu-1/power", "3.5")  # discovered, not declared
        await until_state(client, lambda s: _status("plant/ahu-1/supply_temp", "ok", 14.2)(s) and "plant/ahu-1/power" in s)

        mosquitto.kill()
        state = await until_state(
            client,
            lambda s: _status("plant/ahu-1/supply_temp", "down")(s) and _status("plant/ahu-1/power", "down")(s),
        )
        assert state["plant/ahu-1/supply_temp"]["value"] == 14.2  # last value kept

        mosquitto.start()  # same port
        await eventually(lambda: producer.connected, timeout=10)
        state = await until_state(
            client, lambda s: _status("plant/ahu-1/supply_temp", "ok")(s) and _status("plant/ahu-1/power", "ok")(s)
        )
        await _publish(mosquitto, "hvac/plant/ahu-1/supply_temp", "14.9")
        await until_state(client, _status("plant/ahu-1/supply_temp", "ok", 14.9))
        assert client.state == client.STATE_OPEN
        assert producer.connects >= 2
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_a_broker_that_is_down_at_start_is_retried(tmp_path):
    broker = Mosquitto(tmp_path)
    producer = _producer(broker)
    with watch_log() as log:
        running = await start_server([producer])
        try:
            # Its first attempt failed: wait for that event, not for a guessed time.
            await eventually(lambda: "cannot connect" in log.text(), timeout=10)
            assert not producer.connected
            broker.start()
            await eventually(lambda: producer.connected, timeout=10)
            client = await within(5, connect(reactor(), running.port))
            await _publish(broker, "hvac/plant/ahu-2/fan_speed", "40")
            await until_state(client, _status("plant/ahu-2/fan_speed", "ok", 40))
            client.sendClose()
            await client.closed
        finally:
            await stop_server(running)
            broker.kill()


@pytest_twisted.ensureDeferred
async def test_username_and_password_are_used(tmp_path):
    import os
    import shutil
    import subprocess

    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.access(tool, os.X_OK):
        pytest.skip("mosquitto_passwd is not installed")
    passwords = tmp_path / "passwords"
    subprocess.run([tool, "-b", "-c", str(passwords), "hvac", "s3cret"], check=True, capture_output=True, timeout=10)
    passwords.chmod(0o644)
    broker = Mosquitto(tmp_path, extra_config=[f"password_file {passwords}"], allow_anonymous=False)
    broker.start()
    good = _producer(broker, username="hvac", password="s3cret", client_id="good")
    bad = _producer(broker, username="hvac", password="wrong", client_id="bad")
    bad.name = "mqtt.bad"
    running = await start_server([good, bad])
    try:
        await eventually(lambda: good.connected, timeout=5)
        assert not bad.connected
    finally:
        await stop_server(running)
        broker.kill()


@pytest_twisted.ensureDeferred
async def test_tls_to_the_broker_checks_its_certificate(tmp_path):
    from tests.brokers import make_tls_files

    files = make_tls_files(tmp_path)
    broker = Mosquitto(
        tmp_path, extra_config=[f"cafile {files['ca']}", f"certfile {files['cert']}", f"keyfile {files['key']}"]
    )
    broker.start()
    trusted = _producer(broker, tls=MqttTls(ca=str(files["ca"])))
    other_ca = tmp_path / "other"
    other_ca.mkdir()
    untrusted = _producer(broker, tls=MqttTls(ca=str(make_tls_files(other_ca)["ca"])))
    untrusted.name = "mqtt.untrusted"
    running = await start_server([trusted, untrusted])
    try:
        await eventually(lambda: trusted.connected, timeout=5)
        assert trusted.connects == 1
        assert not untrusted.connected and untrusted.connects == 0
    finally:
        await stop_server(running)
        broker.kill()
