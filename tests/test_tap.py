"""hvac_push.ops.tap: command-line options; good values build a service, bad ones give one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from hvac_push.ops.tap import Options, makeService
from tests.test_operations import wait_ready
from tests.wsprobe import bound_ports, first_messages

ROOT = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).with_name("twistd"))


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_defaults_listen_on_8080_of_this_machine_only_and_run_the_simulator():
    options = parse()
    assert options["listen"] == ["tcp:8080:interface=127.0.0.1"]
    assert options["interval"] == 100.0 and options["allow-origin"] == []
    service = makeService(options, reactor=MemoryReactorClock())
    assert isinstance(service, MultiService)
    assert [p.producer.name for p in service.producers] == ["simulator"]


def test_repeatable_options_accumulate():
    options = parse(
        "--listen", "tcp:0:interface=127.0.0.1", "--listen", r"tcp6:0:interface=\:\:1",
        "--allow-origin", "https://a.example", "--allow-origin", "null",
        "--ws-option", "autoPingInterval=5", "--ws-option", "failByDrop=true",
    )
    assert len(options["listen"]) == 2
    assert options["allow-origin"] == ["https://a.example", "null"]
    assert options["ws-option"] == {"autoPingInterval": 5, "failByDrop": True}


def test_ws_options_reach_autobahn():
    options = parse("--ws-option", "maxMessagePayloadSize=1000", "--ws-option", "openHandshakeTimeout=3")
    service = makeService(options, reactor=MemoryReactorClock())
    assert service.factory.maxMessagePayloadSize == 1000
    assert service.factory.openHandshakeTimeout == 3
    assert service.factory.failByDrop is False  # our default survives


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--interval", "abc"], "--interval: expected a number"),
        (["--interval", "0"], "--interval: must be between"),
        (["--sim-units", "0"], "--sim-units: must be between"),
        (["--sim-rate", "-5"], "--sim-rate: must be between"),
        (["--max-connections", "many"], "--max-connections: expected a number"),
        (["--listen", "tcp:notaport"], "--listen 'tcp:notaport'"),
        (["--listen", "bogus:1"], "--listen 'bogus:1'"),
        (["--allow-origin", "example.com"], "expected scheme://host"),
        (["--ws-option", "nonsense"], "expects KEY=VALUE"),
        (["--ws-option", "foo=1"], "not an Autobahn protocol option"),
        (["--ws-option", "maxConnections=3"], "use --max-connections"),
        (["--ws-option", "versions=[99]"], "bad WebSocket option"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_option(argv, message):
    with pytest.raises(usage.UsageError) as e:
        parse(*argv)
    assert message in str(e.value)


@pytest.mark.parametrize("option", ["--publish", "--subscribe"])
@pytest.mark.parametrize(
    "url, message",
    [
        ("mqtt://u:LeakMe123@127.0.0.1:99999/a", "'mqtt://u:***@127.0.0.1:99999/a': bad port"),
        ("mqtt://u:LeakMe123@", "'mqtt://u:***@': no host"),
        ("mqtts://u:Leak%40Me123@host/a/+", "'mqtts://u:***@host/a/+': the prefix must be plain topic levels"),
        ("mqtt://u:LeakMe123@host?ca=/c", "'mqtt://u:***@host?ca=/c': ca and insecure need mqtts://"),
        ("mqtt://u:LeakMe123@host?password_file=/x", "password_file needs user@ and no password"),
        ("http://u:LeakMe123@host", "'http://u:***@host': expected mqtt://"),
    ],
)
def test_broker_url_errors_never_print_the_password(option, url, message):
    with pytest.raises(usage.UsageError) as e:
        parse(option, url)
    assert str(e.value).startswith(f"{option}: ")
    assert message in str(e.value) and "LeakMe123" not in str(e.value) and "Leak%40Me123" not in str(e.value)


def test_parsed_broker_urls_never_show_the_password():
    options = parse("--publish", "mqtt://u:LeakMe123@127.0.0.1:1884/a", "--subscribe", "mqtt://u:LeakMe123@127.0.0.1/b")
    assert options["publish"][0].broker.password == "LeakMe123"
    for shown in (repr(options["publish"]), repr(options["subscribe"]), options["publish"][0].describe()):
        assert "LeakMe123" not in shown


def test_parsing_options_builds_nothing_on_a_reactor():
    """--listen and --ws-option are checked without a reactor: parsing must not install the global one."""
    code = (
        "import sys\n"
        "from hvac_push.ops.tap import Options\n"
        "Options().parseOptions(['--listen', 'tcp:0:interface=127.0.0.1', '--listen', 'reuseport:0',"
        " '--ws-option', 'autoPingInterval=5'])\n"
        "for bad in (['--listen', 'tcp:notaport'], ['--ws-option', 'versions=[99]']):\n"
        "    try:\n"
        "        Options().parseOptions(bad)\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__, e)\n"
        "print('reactor imported:', 'twisted.internet.reactor' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("UsageError --listen 'tcp:notaport'")
    assert lines[1].startswith("UsageError bad WebSocket option")
    assert lines[2] == "reactor imported: False"


@pytest.mark.slow
def test_twistd_with_a_bad_value_ends_with_one_line_and_no_traceback(tmp_path):
    result = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "hvacpush", "--sim-rate", "lots"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert output.strip().splitlines() == [
        "twistd hvacpush: --sim-rate: expected a number, got 'lots' (see: twistd hvacpush --help)"
    ]


@pytest.mark.slow
def test_twistd_serves_the_simulated_plant_from_the_source_tree(tmp_path):
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "hvacpush", "--listen", "tcp:0:interface=127.0.0.1",
         "--port-file", str(tmp_path / "ports"), "--sim-units", "3"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # The port file is written once it listens: no port race, and no connecting before it is up.
        [port] = bound_ports(tmp_path / "ports", alive=lambda: process.poll() is None)
        assert wait_ready(port)["ready"] is True  # the simulator has published its initial state
        snapshot, update = first_messages(port, count=2)
        assert snapshot["type"] == "snapshot" and len(snapshot["points"]) == 21
        assert {pid.split("/")[1] for pid in snapshot["points"]} == {"chiller-1", "crac-1", "ahu-1"}
        assert update["type"] == "update" and update["version"] > snapshot["version"]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM), output  # twistd re-raises the signal
    assert "Traceback" not in output


def test_coalesce_ms_sets_the_fan_outs_coalescing_window_and_is_off_by_default():
    assert makeService(parse(), reactor=MemoryReactorClock()).factory.coalesce == 0.0
    service = makeService(parse("--coalesce-ms", "2.5"), reactor=MemoryReactorClock())
    assert service.factory.coalesce == 0.0025
    with pytest.raises(usage.UsageError):
        parse("--coalesce-ms", "-1")
