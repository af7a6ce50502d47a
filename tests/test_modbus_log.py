"""hvac_push.sources.modbus_log: pymodbus's own log messages reach Twisted's logger at their level, once,
instead of twistd's C{[stderr#error]} lines."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from twisted.logger import LogLevel

from hvac_push.sources.modbus_log import TwistedLogHandler, route_pymodbus_logs, twisted_level
from tests.logwatch import watch_log
from tests.wsprobe import closed_port  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).with_name("twistd"))


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(
    "level, expected",
    [
        (logging.DEBUG, LogLevel.debug),
        (logging.INFO, LogLevel.info),
        (logging.WARNING, LogLevel.warn),
        (logging.ERROR, LogLevel.error),
        (logging.CRITICAL, LogLevel.critical),
        (5, LogLevel.debug),
    ],
)
def test_standard_levels_map_to_twisted_levels(level, expected):
    assert twisted_level(level) is expected


def test_pymodbus_records_become_twisted_events_at_their_level_and_stop_there():
    handler = route_pymodbus_logs()
    assert route_pymodbus_logs() is handler  # installed once
    assert [h for h in logging.getLogger("pymodbus").handlers if isinstance(h, TwistedLogHandler)] == [handler]
    child = logging.getLogger("pymodbus.logging")
    on_root = Collect()
    root = logging.getLogger()
    root.addHandler(on_root)
    with watch_log() as log:
        previous = logging.getLogger("pymodbus").level
        logging.getLogger("pymodbus").setLevel(logging.DEBUG)
        try:
            child.error("Connection to (%s, %s) failed: %s", "127.0.0.1", 1502, "refused")
            child.warning("a warning")
            child.debug("a debug line")
        finally:
            logging.getLogger("pymodbus").setLevel(previous)
            root.removeHandler(on_root)
    events = [e for e in log.events if e.get("log_namespace") == "pymodbus"]
    assert [(e["log_level"], e["message"]) for e in events] == [
        (LogLevel.error, "Connection to (127.0.0.1, 1502) failed: refused"),
        (LogLevel.warn, "a warning"),
        (LogLevel.debug, "a debug line"),
    ]
    assert events[0]["logger"] == "pymodbus.logging"
    assert on_root.records == []  # not also through the root logger (twistd's stderr)


def test_twistd_logs_pymodbus_messages_at_their_level_not_as_stderr(tmp_path, closed_port):
    port = closed_port  # nothing listens: pymodbus logs the refused connection
    (tmp_path / "plant.toml").write_text(
        f"""
[modbus.plc]
host = "127.0.0.1"
port = {port}
poll_interval = 0.2
timeout = 0.2

[units.chiller-1]
source = "modbus.plc"

[units.chiller-1.points.supply_temp]
register = 100
"""
    )
    logfile = tmp_path / "twistd.log"
    with open(logfile, "wb") as out:
        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "hvacpush", "--config", "plant.toml", "--listen", "tcp:0:interface=127.0.0.1"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "[hvac_push.producers#warn]" not in logfile.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, logfile.read_text()
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    text = logfile.read_text()
    assert "[pymodbus#error] pymodbus.logging: Connection to (127.0.0.1, " + str(port) + ") failed" in text
    assert "stderr" not in text and "Traceback" not in text
