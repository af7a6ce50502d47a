"""The first hour of a new user: safe by default, the URLs at start-up, a busy port and a bad option in one line."""

from __future__ import annotations

import errno
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from hvac_push.ops.listeners import ListenerService, cannot_listen_line, listening_line
from hvac_push.ops.tap import LOOPBACK_LISTEN, LOOPBACK_NOTE, Options, makeService
from tests.logwatch import watch_log
from tests.test_tap import TWISTD
from tests.wsprobe import bound_ports

ROOT = Path(__file__).resolve().parents[1]


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def token_file(tmp_path: Path) -> str:
    from hvac_push.transport.auth import hash_token

    path = tmp_path / "tokens.toml"
    path.write_text(f'[[token]]\nname = "t"\nsha256 = "{hash_token("t" * 40)}"\npoints = ["#"]\n', encoding="utf-8")
    return str(path)


# -- safe by default --------------------------------------------------------------


def test_without_listen_or_a_token_the_server_listens_on_this_machine_only_and_says_how_to_open_it():
    options = parse("--store", "memory")
    assert options["listen"] == [LOOPBACK_LISTEN] == ["tcp:8080:interface=127.0.0.1"]
    with watch_log() as log:
        service = makeService(options, reactor=MemoryReactorClock())
    notes = [e for e in log.events if e.get("note") == LOOPBACK_NOTE]
    assert len(notes) == 1
    assert "--listen tcp:8080" in LOOPBACK_NOTE and "--auth-token-file" in LOOPBACK_NOTE
    assert [s.description for s in service if isinstance(s, ListenerService)] == [LOOPBACK_LISTEN]


def test_an_explicit_listen_or_a_token_option_keeps_every_interface_and_says_nothing(tmp_path):
    assert parse("--listen", "tcp:8080")["listen"] == ["tcp:8080"]
    assert parse("--auth-token-file", token_file(tmp_path))["listen"] == ["tcp:8080"]
    for options in (parse("--listen", "tcp:8080", "--store", "memory"), parse("--auth-token-file", token_file(tmp_path))):
        with watch_log() as log:
            makeService(options, reactor=MemoryReactorClock())
        assert not [e for e in log.events if e.get("note") == LOOPBACK_NOTE]


def test_outside_twistd_a_bad_option_is_still_a_usage_error_for_the_caller():
    with pytest.raises(usage.UsageError, match="--bogus"):
        parse("--bogus")


# -- the lines themselves ------------------------------------------------------------


def test_the_listening_line_names_every_url_for_the_address_really_bound():
    line = listening_line("tcp:0:interface=127.0.0.1", IPv4Address("TCP", "127.0.0.1", 43210))
    assert line == (
        "Listening on 127.0.0.1:43210 (this machine only): dashboard http://localhost:43210/, "
        "stream ws://localhost:43210/ws, health http://localhost:43210/healthz, metrics http://localhost:43210/metrics"
    )
    assert "(all IPv4 interfaces)" in listening_line("tcp:8080", IPv4Address("TCP", "0.0.0.0", 8080))
    tls = listening_line("ssl:8443:privateKey=k.pem", IPv6Address("TCP", "::1", 8443))
    assert "stream wss://[::1]:8443/ws" in tls and "dashboard https://[::1]:8443/" in tls
    assert listening_line("unix:/run/h.sock", "UNIXAddress('/run/h.sock')").startswith("Listening on unix:/run/h.sock")


def test_a_busy_port_line_names_the_port_and_what_to_do():
    busy = CannotListenError("127.0.0.1", 8080, OSError(errno.EADDRINUSE, "Address already in use"))
    line = cannot_listen_line("tcp:8080:interface=127.0.0.1", busy)
    assert line.startswith("Cannot listen on port 8080: it is already in use")
    assert line.endswith("--listen tcp:8081:interface=127.0.0.1")
    denied = CannotListenError("", 80, OSError(errno.EACCES, "Permission denied"))
    assert "permission denied" in cannot_listen_line("tcp:80", denied) and "--listen tcp:8080" in cannot_listen_line(
        "tcp:80", denied
    )


# -- under twistd ------------------------------------------------------------------------


def run_twistd(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TWISTD, "-n", "--pidfile=", "hvacpush", *args], cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.slow
def test_a_port_in_use_is_one_line_naming_it_and_a_non_zero_exit(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_twistd(tmp_path, "--store", "memory", "--listen", f"tcp:{port}:interface=127.0.0.1")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output and "stderr" not in output
    ours = [line for line in output.splitlines() if "hvac_push" in line]
    assert len(ours) == 1, output
    assert f"Cannot listen on port {port}: it is already in use" in ours[0]
    assert f"--listen tcp:{port + 1}:interface=127.0.0.1" in ours[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, error",
    [
        (("--bogus",), "option --bogus not recognized"),
        (("--interval", "soon"), "--interval: expected a number, got 'soon'"),
        (("--listen", "tcp:notaport"), "--listen 'tcp:notaport'"),
    ],
)
def test_a_bad_option_is_one_line_pointing_to_help_not_the_usage_text(tmp_path, args, error):
    result = run_twistd(tmp_path, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"twistd hvacpush: {error}") and line.endswith("(see: twistd hvacpush --help)")


@pytest.mark.slow
def test_at_start_up_each_listener_logs_its_urls_and_they_answer(tmp_path):
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "hvacpush", "--store", "memory", "--sim-units", "1",
         "--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp:0:interface=127.0.0.1",
         "--port-file", str(tmp_path / "ports")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        port, _ = bound_ports(tmp_path / "ports", alive=lambda: process.poll() is None)
        listening: list[str] = []
        deadline = time.monotonic() + 30
        while len(listening) < 2:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if "Listening on" in line:
                listening.append(line.split("] ", 1)[1].rstrip())
        assert any(f"127.0.0.1:{port} (this machine only)" in line for line in listening), listening
        for line in listening:
            urls = dict(part.split(" ", 1) for part in line.split(": ", 1)[1].split(", "))
            assert set(urls) == {"dashboard", "stream", "health", "metrics"}
            assert urls["stream"].startswith("ws://localhost:") and urls["stream"].endswith("/ws")
            with urllib.request.urlopen(urls["health"].replace("localhost", "127.0.0.1"), timeout=10) as answer:
                assert answer.status == 200
            with urllib.request.urlopen(urls["metrics"].replace("localhost", "127.0.0.1"), timeout=10) as answer:
                assert b"hvacpush_" in answer.read()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
