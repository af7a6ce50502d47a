"""hvac_push.ops.logs and hvac_push.ops.service's shutdown, under twistd as in production: graceful shutdown
on a signal, JSON logs, /metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any
from pathlib import Path

import pytest

from hvac_push.ops.logs import JSON_OBSERVER
from hvac_push.ops.tap import Options
from tests.rawws import RawClient, port_is_closed
from tests.wsprobe import bound_ports

ROOT = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).with_name("twistd"))


def twistd(tmp_path: Path, *args: str, twistd_args: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    # A suite started as a shell's background job (`scripts/test &`, no job control) runs with SIGINT
    # ignored, and a child inherits an ignored signal through exec: twistd would never see the SIGINT a
    # test sends it. A handled signal is reset to the default on exec, so handle it while starting
    # (only the main thread may; tests that start twistd from other threads send it no SIGINT).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if in_main else None
    try:
        return subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", *twistd_args, "hvacpush", *args],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def twistd_listening(
    tmp_path: Path, *args: str, twistd_args: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], int]:
    """L{twistd} on port 0 of 127.0.0.1, and the port it bound (read from its --port-file): no port race."""
    port_file = tmp_path / "twistd-ports"
    port_file.unlink(missing_ok=True)
    process = twistd(
        tmp_path, "--listen", "tcp:0:interface=127.0.0.1", "--port-file", str(port_file), *args, twistd_args=twistd_args
    )
    try:
        [port] = bound_ports(port_file, alive=lambda: process.poll() is None)
    except Exception:
        if process.poll() is None:
            process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"twistd did not listen:\n{output}") from None
    return process, port


def wait_ready(port: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                health: dict[str, Any] = json.load(response)
                return health
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_closes_every_client_with_1001_and_exits_within_the_drain_bound(tmp_path, signum):
    drain = 1.5
    process, port = twistd_listening(tmp_path, "--sim-units", "1", "--drain-timeout", str(drain))
    try:
        assert wait_ready(port)["ready"] is True
        polite, silent = RawClient(port), RawClient(port)
        assert polite.message()["type"] == "snapshot" and silent.message()["type"] == "snapshot"

        signalled = time.monotonic()
        process.send_signal(signum)
        # Both get "going away"; one answers the closing handshake, the other never does.
        assert polite.wait_close() == (1001, "server shutting down")
        polite.send_close(1001)
        assert silent.wait_close()[0] == 1001
        assert polite.at_eof() and silent.at_eof(timeout=drain + 5)
        output, _ = process.communicate(timeout=drain + 10)
        elapsed = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert elapsed < drain + 3, f"took {elapsed:.1f}s to exit"
    assert process.returncode in (0, -signum), output
    assert "Traceback" not in output and "Server Shut Down." in output
    assert port_is_closed(port)
    polite.close()
    silent.close()


@pytest.mark.slow
def test_port_file_names_the_ports_the_kernel_picked_for_every_listener_in_order(tmp_path):
    port_file = tmp_path / "ports"
    process = twistd(
        tmp_path, "--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp:0:interface=127.0.0.1",
        "--port-file", str(port_file), "--sim-units", "1",
    )
    try:
        ports = bound_ports(port_file, alive=lambda: process.poll() is None)
        assert len(ports) == 2 and len(set(ports)) == 2 and 0 not in ports
        for port in ports:
            assert wait_ready(port)["ready"] is True  # each one is really served
        assert not list(tmp_path.glob("ports.tmp*")), "the file is written through a temporary and renamed"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output, output


@pytest.mark.slow
def test_log_format_json_makes_every_stdout_line_a_json_object(tmp_path):
    process, port = twistd_listening(tmp_path, "--sim-units", "1", "--log-format", "json")
    try:
        wait_ready(port)
        client = RawClient(port)
        assert client.message()["type"] == "snapshot"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"hvacpush_clients 1.0" in response.read()
        client.send_close()
        client.at_eof()
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    lines = [line for line in output.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # each line on its own is one JSON object
    assert all(isinstance(e, dict) and e["level"] and "text" in e and "time" in e for e in events)
    texts = [e["text"] for e in events]
    assert any("starting up" in t for t in texts) and "Server Shut Down." in texts
    assert any("/metrics" in t for t in texts)  # the access log goes through the same observer
    # No per-message logging: the simulator kept publishing, and nothing said so.
    assert len(events) < 40, texts


def test_log_format_json_selects_our_observer_through_twistds_own_logger_option():
    from twisted.scripts.twistd import ServerOptions

    config = ServerOptions()
    config.parseOptions(["-n", "hvacpush", "--log-format", "json"])
    from hvac_push.ops.logs import json_observer

    assert config["logger"] is json_observer
    assert JSON_OBSERVER == "hvac_push.ops.logs.json_observer"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["hvacpush", "--log-format", "json"], "run twistd with -n"),
        (["-n", "--logger", "twisted.logger.textFileLogObserver", "hvacpush", "--log-format", "json"], "use one"),
        (["-n", "hvacpush", "--log-format", "xml"], "--log-format: expected one of text, json"),
    ],
)
def test_log_format_conflicts_are_usage_errors(argv, message, capsys):
    from twisted.scripts.twistd import ServerOptions

    # Under twistd a usage error is one line on stderr and exit status 2 (hvac_push.ops.tap.Options.parseOptions).
    with pytest.raises(SystemExit) as e:
        ServerOptions().parseOptions(argv)
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert message in line and line.endswith("(see: twistd hvacpush --help)")


def test_log_format_outside_twistd_leaves_logging_to_the_host_program():
    options = Options()
    options.parseOptions(["--log-format", "json"])
    assert options["log-format"] == "json"


def test_json_lines_carry_the_event_fields_and_failures():
    import io

    from twisted.logger import Logger, LogPublisher

    from hvac_push.ops.logs import json_file_observer

    out = io.StringIO()
    publisher = LogPublisher(json_file_observer(out))
    log = Logger(namespace="hvac_push.test", observer=publisher)
    log.info("client {peer} joined", peer="tcp4:127.0.0.1:5000")
    try:
        1 / 0
    except ZeroDivisionError:
        log.failure("tick failed")
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    assert first["text"] == "client tcp4:127.0.0.1:5000 joined" and first["peer"] == "tcp4:127.0.0.1:5000"
    assert first["level"] == "info" and first["log_namespace"] == "hvac_push.test"
    assert second["level"] == "critical" and "ZeroDivisionError" in second["traceback"]
