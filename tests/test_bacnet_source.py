"""The BACnet/IP source against a real bacpypes3 device on loopback, end to end to a WebSocket client."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from hvac_push.ops.plant_file import ConfigError, load_config, parse_config
from hvac_push.ops.plant_sources import ConfigReloader, build_producer, producer_specs
from hvac_push.sources.bacnet import BacnetPoint, BacnetProducer
from hvac_push.sources.bacnet_maps import STATUS_RULES, parse_ip_address, parse_object, point_status, unit_string
from hvac_push.testing import connect
from tests.bacnet_device import BacnetDevice
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, point_of, until_state, within
from tests.logwatch import watch_log
from tests.wsprobe import refused_port, restartable_port

ROOT = Path(__file__).resolve().parent.parent


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def device() -> Iterator[BacnetDevice]:
    dev = BacnetDevice()
    dev.start()
    try:
        yield dev
    finally:
        dev.stop()


def plant_toml(
    dev: BacnetDevice, *, local_port: int | None = None, extra_points: str = "", prefix: str = "", **settings: Any
) -> str:
    """A plant file reading the test device's five objects (interval and timeouts short, for tests)."""
    options = {"interval": 0.2, "apdu_timeout": 0.5, "retries": 0, "cov_lifetime": 60} | settings
    lines = "\n".join(f"{k} = {v}" for k, v in options.items())
    where = f'device = {dev.instance}, address = "{dev.address}"'
    return f"""
[bacnet.field]
address = "127.0.0.1{prefix}:{local_port or restartable_port(socket.SOCK_DGRAM)}"
{lines}

[units.ahu-1]
source = "bacnet.field"

[units.ahu-1.points]
supply_temp = {{ {where}, object = "analog-input,1" }}
zone_temp = {{ {where}, object = "analog-value,1" }}
valve = {{ {where}, object = "analog-value,2", cov_increment = 5 }}
fan = {{ {where}, object = "binary-value,1" }}
mode = {{ {where}, object = "multi-state-value,1" }}
{extra_points}
"""


async def serve_plant(text: str, tmp_path: Path) -> tuple[Any, ConfigReloader, BacnetProducer]:
    path = tmp_path / "plant.toml"
    path.write_text(text, encoding="utf-8")
    running = await start_server()
    reloader = ConfigReloader(running.service, load_config(str(path)))
    producer = reloader.sources["bacnet.field"].producer
    assert isinstance(producer, BacnetProducer)
    return running, reloader, producer


def status(state: dict[str, Any], point: str) -> str | None:
    found = state.get(f"plant/ahu-1/{point}", {}).get("status")
    return found if isinstance(found, str) else None


def ok(state: dict[str, Any], point: str, value: Any = None) -> bool:
    p = state.get(f"plant/ahu-1/{point}")
    return p is not None and p["status"] == "ok" and (value is None or p["value"] == value)


# -- tables and parsing --------------------------------------------------------


def test_status_and_unit_tables():
    assert point_status([]) == "ok"
    assert point_status({"in-alarm", "overridden"}) == "ok"
    assert point_status({"out-of-service"}) == "stale"
    assert point_status({"out-of-service", "fault"}) == "fault"
    assert point_status({"no-answer"}) == "fault"
    assert {status for _, status in STATUS_RULES} <= {"ok", "stale", "fault"}
    assert unit_string("degrees-celsius") == "°C"
    assert unit_string("degrees-fahrenheit") == "°F"
    assert unit_string("kilowatts") == "kW"
    assert unit_string("percent") == "%"
    assert unit_string("no-units") == ""
    assert unit_string("furlongs-per-fortnight") == "furlongs-per-fortnight"


def test_object_and_address_parsing():
    assert parse_object("analog-input,1") == ("analog-input", 1)
    assert parse_object("multi-state-value, 2") == ("multi-state-value", 2)
    with pytest.raises(ValueError, match="did you mean 'analog-input'"):
        parse_object("analog-imput,1")
    with pytest.raises(ValueError, match="TYPE,INSTANCE"):
        parse_object("analog-input")
    with pytest.raises(ValueError, match="instance"):
        parse_object("analog-input,4194303")
    assert parse_ip_address("10.0.0.5/24") == ("10.0.0.5", 24, 47808)
    assert parse_ip_address("127.0.0.1:47809", prefix=False) == ("127.0.0.1", None, 47809)
    for bad in ("10.0.0.256", "10.0.0.1:0", "host:47808", "10.0.0.1/33"):
        with pytest.raises(ValueError):
            parse_ip_address(bad)


def test_values_from_bacpypes3_types():
    from bacpypes3.basetypes import BinaryPV
    from bacpypes3.primitivedata import CharacterString, Null, Real, Unsigned

    from hvac_push.sources.bacnet_stack import to_value

    assert to_value(Real(21.2)) == 21.2
    assert to_value(BinaryPV("active")) is True
    assert to_value(BinaryPV("inactive")) is False
    assert to_value(Unsigned(3)) == 3
    assert to_value(CharacterString("auto")) == "auto"
    with pytest.raises(ValueError):
        to_value(Null(()))
    with pytest.raises(ValueError):
        to_value(Real(float("nan")))


def test_a_point_needs_a_device_or_an_address():
    with pytest.raises(ValueError):
        BacnetPoint("p/u/x", "analog-input,1")
    with pytest.raises(ValueError):
        BacnetPoint("p/u/x", "analog-imput,1", device=5)


# -- the plant file --------------------------------------------------------------

GOOD = """
[bacnet.field]
address = "192.168.10.5/24"
device_instance = 599
device_name = "hvac-push gateway"
apdu_timeout = 2
retries = 2
interval = 15
cov_lifetime = 600

[units.ahu-1]
source = "bacnet.field"
[units.ahu-1.points]
supply_temp = { device = 1001, object = "analog-input,1", unit = "°C", cov_increment = 0.2 }
fan = { address = "192.168.10.40", object = "binary-value,3", property = "present-value" }
"""


def test_plant_file_bacnet_tables_become_one_producer():
    config = parse_config(GOOD)
    (interface,) = config.bacnet
    assert (interface.address, interface.device_instance, interface.device_name) == ("192.168.10.5/24", 599, "hvac-push gateway")
    assert (interface.apdu_timeout, interface.retries, interface.interval, interface.cov_lifetime) == (2.0, 2, 15.0, 600)
    assert config.source_keys() == ["bacnet.field"]
    supply, fan = config.points
    assert supply.bacnet is not None and (supply.bacnet.device, supply.bacnet.object, supply.bacnet.cov_increment) == (
        1001, "analog-input,1", 0.2)
    assert fan.bacnet is not None and fan.bacnet.address == "192.168.10.40:47808"
    specs = producer_specs(config)
    producer = build_producer(specs["bacnet.field"])
    assert isinstance(producer, BacnetProducer)
    assert producer.name == "bacnet.field" and producer.interval == 15.0 and producer.device_instance == 599
    assert [p.device_key for p in producer.points] == ["device 1001", "192.168.10.40:47808"]
    assert parse_config(GOOD.replace('"192.168.10.5/24"', '"192.168.10.5/24:47809"')).bacnet[0].address.endswith(":47809")


@pytest.mark.parametrize(
    "change, message",
    [
        (('device_name = "hvac-push gateway"', 'device_nme = "x"'),
         "bacnet.field.device_nme: unknown key (did you mean 'device_name'?)"),
        (('object = "analog-input,1"', 'object = "analog-imput,1"'),
         "units.ahu-1.points.supply_temp.object: unknown object type 'analog-imput' (did you mean 'analog-input'?)"),
        (('object = "analog-input,1"', 'objet = "analog-input,1"'),
         "units.ahu-1.points.supply_temp.objet: unknown key (did you mean 'object'?)"),
        (('address = "192.168.10.40"', 'address = "192.168.10.400"'),
         "units.ahu-1.points.fan.address: bad IPv4 address '192.168.10.400'"),
        (('{ device = 1001, ', '{ '), "units.ahu-1.points.supply_temp.device: required: the device instance (or give its address)"),
        (('address = "192.168.10.5/24"', 'address = "eth0"'), "bacnet.field.address: expected an IPv4 address"),
        (("retries = 2", "retries = 99"), "bacnet.field.retries: must be between 0 and 10, got 99"),
        (('property = "present-value"', 'property = "Present Value"'),
         "units.ahu-1.points.fan.property: expected a property name like 'present-value'"),
        (('cov_increment = 0.2', 'register = 3'), "units.ahu-1.points.supply_temp.register: only for Modbus points"),
        (('source = "bacnet.field"', 'source = "bacnet.feild"'), "units.ahu-1.source: unknown source 'bacnet.feild'"),
    ],
)
def test_plant_file_errors_are_one_line(change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(ConfigError) as caught:
        parse_config(GOOD.replace(old, new))
    first = caught.value.errors[0]
    assert "\n" not in str(caught.value)
    assert first.startswith("plant.toml: " + message), first


def test_a_device_without_address_needs_a_prefix_for_who_is():
    with pytest.raises(ConfigError) as caught:
        parse_config(GOOD.replace('"192.168.10.5/24"', '"192.168.10.5"'))
    assert str(caught.value) == (
        "plant.toml: units.ahu-1.points.supply_temp.address: required: bacnet.field's address has no /PREFIX (below 31), "
        "so Who-Is cannot find device 1001 (give the device's address, or a /PREFIX)"
    )


def test_two_interfaces_on_one_port_are_refused():
    text = GOOD + '\n[bacnet.other]\naddress = "10.0.0.1:47808"\n'
    with pytest.raises(ConfigError, match="bacnet.other.address: UDP port 47808 is also used by bacnet.field"):
        parse_config(text)


def test_the_checker_cli_reports_one_line(tmp_path):
    path = tmp_path / "plant.toml"
    path.write_text(GOOD.replace('"analog-input,1"', '"analog-inptu,1"'), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "hvac_push.ops.plant_file", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.strip().splitlines() == [
        f"{path}: units.ahu-1.points.supply_temp.object: unknown object type 'analog-inptu' (did you mean 'analog-input'?)"
    ]
    assert "Traceback" not in done.stderr


# -- against a real device ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_values_then_cov_and_polled_changes_reach_a_websocket_client(device, tmp_path):
    running, _, producer = await serve_plant(plant_toml(device), tmp_path)
    try:
        client = await within(5, connect(reactor(), running.port))
        state = await until_state(client, lambda s: all(ok(s, p) for p in ("supply_temp", "zone_temp", "valve", "fan", "mode")))
        assert state["plant/ahu-1/supply_temp"]["value"] == 12.5
        assert state["plant/ahu-1/supply_temp"]["unit"] == "°C"  # from the object's engineering units
        assert state["plant/ahu-1/zone_temp"]["value"] == 21.0
        assert state["plant/ahu-1/valve"]["unit"] == "%"
        assert state["plant/ahu-1/fan"]["value"] is False
        assert state["plant/ahu-1/mode"]["value"] == 1
        await eventually(lambda: len(producer.modes) == 5, timeout=5)  # subscriptions follow the first read
        assert producer.modes["plant/ahu-1/zone_temp"] == "cov"
        assert producer.modes["plant/ahu-1/supply_temp"] == "poll"  # this object refuses COV

        # A COV point: the device notifies.
        await deferToThread(device.set, "analog-value,1", 22.5)
        await deferToThread(device.set, "binary-value,1", "active")
        await until_state(client, lambda s: ok(s, "zone_temp", 22.5) and ok(s, "fan", True))
        assert producer.counters["cov_notifications"] >= 2
        # A polled point: the next ReadPropertyMultiple sees it.
        await deferToThread(device.set, "analog-input,1", 14.25)
        await until_state(client, lambda s: ok(s, "supply_temp", 14.25))
        assert producer.counters["requests"] >= 2 and producer.counters["cov_refused"] >= 1
        # cov_increment = 5: a change of 2 is not published, one of 6 is.
        seen: list[Any] = []

        def valve_reaches(s: dict[str, Any]) -> bool:
            seen.append(s["plant/ahu-1/valve"]["value"])
            return bool(seen[-1] == 46.0)

        await deferToThread(device.set, "analog-value,2", 42.0)
        await deferToThread(device.set, "analog-value,2", 46.0)
        await until_state(client, valve_reaches)
        assert 42.0 not in seen
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_device_stopped_is_fault_and_back_is_ok(device, tmp_path):
    running, _, producer = await serve_plant(plant_toml(device), tmp_path)
    try:
        with watch_log() as log:
            client = await within(5, connect(reactor(), running.port))
            await until_state(client, lambda s: ok(s, "zone_temp") and ok(s, "supply_temp"))

            await deferToThread(device.stop)
            state = await until_state(client, lambda s: all(
                status(s, p) == "fault" for p in ("zone_temp", "supply_temp", "fan", "mode")))
            assert state["plant/ahu-1/zone_temp"]["value"] == 21.0  # the last value stays visible
            assert producer.counters["timeouts"] >= 1 and producer.devices[device.address] == "down"

            device.state["analog-value,1"]["presentValue"] = 19.5  # changed while it was off
            await deferToThread(device.start)
            await until_state(client, lambda s: ok(s, "zone_temp", 19.5) and ok(s, "supply_temp") and ok(s, "fan"))
            await eventually(lambda: producer.devices[device.address] == "up", timeout=5)
            # Re-subscribed: a change now arrives over COV again.
            await deferToThread(device.set, "analog-value,1", 20.5)
            await until_state(client, lambda s: ok(s, "zone_temp", 20.5))
            assert await deferToThread(device.subscriptions) >= 2
            assert running.service.producers[0].status.restarts == 0  # handled inside run, no crash
        down_lines = [e for e in log.events if "unreachable" in str(e.get("log_format", ""))]
        assert len(down_lines) == 1  # once per device per minute, however many retries
        assert not log.failures()
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_status_flags_reach_the_point_status(device, tmp_path):
    running, _, producer = await serve_plant(plant_toml(device), tmp_path)
    try:
        client = await within(5, connect(reactor(), running.port))
        await until_state(client, lambda s: ok(s, "zone_temp") and ok(s, "supply_temp"))

        # Over COV (zone_temp) and over polling (supply_temp).
        for oid in ("analog-value,1", "analog-input,1"):
            await deferToThread(device.set_status, oid, out_of_service=True)
        await until_state(client, lambda s: status(s, "zone_temp") == "stale" and status(s, "supply_temp") == "stale")
        for oid in ("analog-value,1", "analog-input,1"):
            await deferToThread(device.set_status, oid, out_of_service=False, reliability="no-sensor")
        await until_state(client, lambda s: status(s, "zone_temp") == "fault" and status(s, "supply_temp") == "fault")
        for oid in ("analog-value,1", "analog-input,1"):
            await deferToThread(device.set_status, oid, reliability="no-fault-detected")
        await until_state(client, lambda s: ok(s, "zone_temp", 21.0) and ok(s, "supply_temp", 12.5))
        assert producer.devices[device.address] == "up"
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_cov_subscriptions_are_renewed_before_they_run_out(device, tmp_path):
    running, _, producer = await serve_plant(plant_toml(device, cov_lifetime=2), tmp_path)
    try:
        client = await within(5, connect(reactor(), running.port))
        await until_state(client, lambda s: ok(s, "zone_temp"))
        await eventually(lambda: len(producer.modes) == 5, timeout=5)
        on_cov = sum(1 for mode in producer.modes.values() if mode == "cov")
        assert on_cov == 4  # all but the analog input, which refuses COV
        await eventually(lambda: producer.counters["cov_renewals"] >= 2 * on_cov, timeout=10)
        # The device still holds the subscriptions (2 s lifetime, renewed at 1.5 s), so changes still arrive.
        assert await deferToThread(device.subscriptions) == on_cov
        await deferToThread(device.set, "analog-value,1", 23.0)
        await until_state(client, lambda s: ok(s, "zone_temp", 23.0))
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_missing_objects_and_properties_fault_only_their_points(device, tmp_path):
    where = f'device = {device.instance}, address = "{device.address}"'
    extra = (f'ghost = {{ {where}, object = "analog-value,9" }}\n'
             f'odd = {{ {where}, object = "binary-value,1", property = "priority-array" }}\n')
    running, _, producer = await serve_plant(plant_toml(device, cov_lifetime=2, extra_points=extra), tmp_path)
    try:
        with watch_log() as log:
            client = await within(5, connect(reactor(), running.port))
            state = await until_state(client, lambda s: ok(s, "zone_temp") and ok(s, "valve") and ok(s, "supply_temp"))
            # Declared points exist from the start (docs/protocol.md): never read, they have no value, and are fault.
            assert state["plant/ahu-1/ghost"]["value"] is None and state["plant/ahu-1/odd"]["value"] is None
            hub = running.hub
            await eventually(lambda: all(point_of(hub, f"plant/ahu-1/{name}").status == "fault" for name in ("ghost", "odd")),
                             timeout=5)
            await eventually(lambda: producer.counters["errors"] >= 2, timeout=5)
            # An object deleted while subscribed: its renewal is refused, and it turns fault.
            await deferToThread(device.delete, "analog-value,2")
            await until_state(client, lambda s: status(s, "valve") == "fault", seconds=10)
            assert ok(state, "zone_temp")
            await eventually(lambda: producer.counters["requests"] > 10, timeout=5)  # many polls of the ghost
        lines = [e for e in log.events if "plant/ahu-1/ghost" in str(e.get("point", ""))]
        assert len(lines) == 1 and "object missing" in lines[0]["problem"]
        assert any("unsupported property" in str(e.get("problem", "")) for e in log.events)
        assert not log.failures()
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_missing_devices_are_logged_counted_and_leave_others_alone(device, tmp_path, request):
    nobody = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # held for the test, never read: nothing answers
    request.addfinalizer(nobody.close)
    nobody.bind(("127.0.0.1", 0))
    silent = f"127.0.0.1:{nobody.getsockname()[1]}"
    extra = (f'ghost_a = {{ device = 4242, object = "analog-value,1" }}\n'  # looked up by Who-Is broadcast
             f'ghost_b = {{ address = "{silent}", object = "analog-value,1" }}\n')
    running, _, producer = await serve_plant(plant_toml(device, extra_points=extra, prefix="/8"), tmp_path)
    try:
        with watch_log() as log:
            client = await within(5, connect(reactor(), running.port))
            await eventually(lambda: producer.devices.get(silent) == "down" and producer.devices.get("device 4242") == "down",
                             timeout=5)
            await eventually(lambda: producer.counters["timeouts"] >= 4, timeout=5)  # retried, with backoff
            state = await until_state(client, lambda s: ok(s, "zone_temp") and ok(s, "supply_temp"))
            # Never read: no value to show, and a status that says so.
            assert state["plant/ahu-1/ghost_a"]["value"] is None
            hub = running.hub
            await eventually(lambda: all(point_of(hub, f"plant/ahu-1/{name}").status == "fault" for name in ("ghost_a", "ghost_b")),
                             timeout=5)
            assert producer.devices[device.address] == "up"
        reasons = {e["device"]: e["reason"] for e in log.events if "unreachable" in str(e.get("log_format", ""))}
        assert reasons["device 4242"] == "no I-Am answered Who-Is 4242"
        assert reasons[silent] == "no answer within 0.5s x 1"
        silent_lines = [e for e in log.events if e.get("device") == silent and "unreachable" in str(e.get("log_format"))]
        assert len(silent_lines) == 1  # one line a minute, however many retries
        assert not log.failures()
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_malformed_packets_are_counted_and_dropped(device, tmp_path):
    port = restartable_port(socket.SOCK_DGRAM)  # the source binds it: it takes no port 0
    running, _, producer = await serve_plant(plant_toml(device, local_port=port), tmp_path)
    try:
        client = await within(5, connect(reactor(), running.port))
        await until_state(client, lambda s: ok(s, "zone_temp"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x81\x0a\x00\x05\xff", ("127.0.0.1", port))  # a BVLL length that lies
            s.sendto(b"not bacnet at all", ("127.0.0.1", port))
        await eventually(lambda: producer.counters["malformed"] >= 2, timeout=5)
        await deferToThread(device.set, "analog-value,1", 24.0)
        await until_state(client, lambda s: ok(s, "zone_temp", 24.0))
        assert running.service.producers[0].status.restarts == 0
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_a_local_port_in_use_is_one_line_and_retried(device, tmp_path):
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        with watch_log() as log:
            running, _, producer = await serve_plant(plant_toml(device, local_port=port), tmp_path)
            try:
                await eventually(lambda: producer.counters["port_in_use"] >= 2, timeout=5)
                lines = [e for e in log.events if "already in use" in str(e.get("error", ""))]
                assert len(lines) == 1
                assert lines[0]["error"] == f"local address 127.0.0.1:{port}: UDP port {port} is already in use"
                assert not log.failures()
                assert running.service.producers[0].status.restarts == 0
                taken.close()  # freed: the producer binds it on its next try
                client = await within(5, connect(reactor(), running.port))
                await until_state(client, lambda s: ok(s, "zone_temp"), seconds=15)
                client.sendClose()
                await client.closed
            finally:
                await stop_server(running)
    finally:
        taken.close()


@pytest_twisted.ensureDeferred
async def test_discovery_prints_a_plant_file_that_serves_the_device(device, tmp_path):
    local = f"127.0.0.1:{restartable_port(socket.SOCK_DGRAM)}"  # discovery binds it: it takes no port 0
    done = await deferToThread(
        subprocess.run,
        [sys.executable, "-m", "hvac_push.sources.bacnet", "discover", "--address", local,
         "--target", device.address, "--timeout", "1", "--interval", "0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "[bacnet.field]" in done.stdout and 'object = "analog-input,1"' in done.stdout
    path = tmp_path / "discovered.toml"
    path.write_text(done.stdout, encoding="utf-8")
    config = load_config(str(path))  # loads as it is
    assert len(config.points) == 5
    running = await start_server()
    ConfigReloader(running.service, config)
    try:
        client = await within(5, connect(reactor(), running.port))
        ids = ["plant/test-ahu/supply_temp", "plant/test-ahu/zone_temp", "plant/test-ahu/valve_position",
               "plant/test-ahu/fan_run", "plant/test-ahu/mode"]
        state = await until_state(client, lambda s: all(s.get(i, {}).get("status") == "ok" for i in ids))
        assert state["plant/test-ahu/zone_temp"]["value"] == 21.0 and state["plant/test-ahu/zone_temp"]["unit"] == "°C"
        assert running.service.hub.meta["plant/test-ahu/zone_temp"].name == "Zone Temp"
        await deferToThread(device.set, "analog-value,1", 25.5)
        await until_state(client, lambda s: s["plant/test-ahu/zone_temp"]["value"] == 25.5)
        client.sendClose()
        await client.closed
    finally:
        await stop_server(running)


def test_discovery_errors_are_one_line(device):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hvac_push.sources.bacnet", "discover", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    taken = run("--address", device.address, "--target", device.address)
    assert taken.returncode == 2
    assert taken.stderr.strip() == f"discover: local address {device.address}: UDP port {device.port} is already in use"
    broadcast = run("--address", "127.0.0.1:0")
    assert broadcast.returncode == 2 and len(broadcast.stderr.strip().splitlines()) == 1
    with refused_port(socket.SOCK_DGRAM) as silent:  # held, never read: nothing answers
        local = f"127.0.0.1:{restartable_port(socket.SOCK_DGRAM)}"
        nobody = run("--address", local, "--target", f"127.0.0.1:{silent}", "--timeout", "0.3")
    assert nobody.returncode == 1
    assert nobody.stderr.strip() == "discover: no device answered Who-Is within 0.3s"


def test_the_commented_bacnet_example_is_valid():
    """docs/plant.example.toml ships [bacnet.field] commented out; uncommented, it must load."""
    example = ROOT / "docs" / "plant.example.toml"
    text = example.read_text(encoding="utf-8")
    start = text.index("# [bacnet.field]")
    block = text[start:].split("\n\n", 1)[0]
    lines = [line[2:] if line.startswith("# ") else line for line in block.splitlines()]
    assert all(not line.startswith("#") for line in lines), block
    plant = parse_config(text.replace(block, "\n".join(lines)), str(example), str(example.parent))
    (interface,) = plant.bacnet
    assert interface.address == "192.168.10.5/24"
    points = plant.points_of("bacnet.field")
    assert [p.point_id for p in points] == ["plant/ahu-2/supply_temp", "plant/ahu-2/fan"]
    assert isinstance(build_producer(producer_specs(plant)["bacnet.field"]), BacnetProducer)
