"""The hvac-push command, run as a process (python -m hvac_push) against real servers and real files."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clientserver import ALARM_PLANT, ROOT, running
from tests.wsprobe import refused_port

POINT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  (?P<point>[\w.-]+/[\w.-]+/[\w.-]+)  (?P<value>.+?)  (?P<status>\w+)$")


def hvac_push(*args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hvac_push", *args], input=stdin, capture_output=True, text=True, timeout=timeout,
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_help_lists_the_commands_and_each_has_its_own():
    top = hvac_push("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in ("tail", "check-config", "hash-token"))
    for command, expected in (("tail", "--count"), ("check-config", "FILE"), ("hash-token", "--generate")):
        shown = hvac_push(command, "--help")
        assert shown.returncode == 0 and expected in shown.stdout, (command, shown.stderr)
    wrong = hvac_push("frobnicate")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr and "Traceback" not in wrong.stderr


@pytest.mark.slow
def test_tail_prints_one_decoded_line_per_point_change_and_the_alarms(tmp_path: Path) -> None:
    (tmp_path / "plant.toml").write_text(ALARM_PLANT, encoding="utf-8")
    with running(tmp_path, "--config", "plant.toml") as server:
        shown = hvac_push("tail", server.url, "--points", "plant/chiller-1/supply_temp,plant/chiller-1/power",
                          "--count", "6")
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        points = [m for m in map(POINT_LINE.match, lines) if m]
        assert len(points) == 6
        assert {m["point"] for m in points} == {"plant/chiller-1/supply_temp", "plant/chiller-1/power"}
        assert {m["status"] for m in points} <= {"ok", "stale"}  # stale only if this machine is very busy
        assert any(m["value"].endswith(" °C") for m in points) and any(m["value"].endswith(" kW") for m in points)
        alarms = [line for line in lines if "  ALARM " in line]
        assert alarms and "plant/chiller-1/supply_temp:high  active  major" in alarms[0]

        quiet = hvac_push("tail", server.url, "--points", "plant/crac-1/#", "--count", "3", "--no-alarms")
        assert quiet.returncode == 0 and len(quiet.stdout.splitlines()) == 3 and "ALARM" not in quiet.stdout


def test_tail_says_clearly_when_nothing_listens_or_the_url_is_wrong():
    with refused_port() as port:
        refused = hvac_push("tail", f"ws://127.0.0.1:{port}/ws", "--count", "1")
    assert refused.returncode == 1 and "connection refused" in refused.stderr
    assert "Traceback" not in refused.stderr
    bad = hvac_push("tail", "http://127.0.0.1/ws")
    assert bad.returncode == 2 and "not a WebSocket URL" in bad.stderr


@pytest.mark.slow
def test_hash_token_makes_an_entry_that_admits_its_token_and_tail_uses_it(tmp_path: Path) -> None:
    made = hvac_push("hash-token", "--generate", "--name", "cli-test", "--points", "plant/chiller-1/#")
    assert made.returncode == 0, made.stderr
    token = made.stderr.strip().rsplit(" ", 1)[-1]
    assert f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"' in made.stdout
    # A token read from stdin, as the docs show it.
    piped = hvac_push("hash-token", "--name", "piped", stdin="x" * 40 + "\n")
    assert piped.returncode == 0 and hashlib.sha256(b"x" * 40).hexdigest() in piped.stdout
    (tmp_path / "tokens.toml").write_text(made.stdout + piped.stdout, encoding="utf-8")

    with running(tmp_path, "--auth-token-file", "tokens.toml", "--sim-units", "1") as server:
        admitted = hvac_push("tail", server.url, "--points", "plant/chiller-1/#", "--count", "2", "--token", token)
        assert admitted.returncode == 0 and len(admitted.stdout.splitlines()) == 2, admitted.stderr
        via_env = subprocess.run(
            [sys.executable, "-m", "hvac_push", "tail", server.url, "--count", "1", "--token-via", "subprotocol"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT), "HVAC_PUSH_TOKEN": token},
        )
        assert via_env.returncode == 0 and len(via_env.stdout.splitlines()) == 1, via_env.stderr
        refused = hvac_push("tail", server.url, "--count", "1", "--token", "not-the-token")
        assert refused.returncode == 1 and "authentication failed: the token was refused" in refused.stderr
        missing = hvac_push("tail", server.url, "--count", "1")
        assert missing.returncode == 1 and "requires a token" in missing.stderr
        assert "Traceback" not in refused.stderr + missing.stderr


def test_check_config_reports_every_problem_or_a_summary(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(ALARM_PLANT, encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text('[modbus.plc]\nhost = "127.0.0.1"\nport = 0\n\n[units.a.points.t]\nsource = "modbus.plc"\nregster = 1\n',
                   encoding="utf-8")
    ok = hvac_push("check-config", str(good))
    assert ok.returncode == 0 and ok.stdout.strip() == f"{good}: ok: 1 points, sources: simulator"
    both = hvac_push("check-config", str(good), str(bad))
    assert both.returncode == 1
    assert "modbus.plc.port" in both.stdout and "did you mean 'register'" in both.stdout and "good.toml: ok" in both.stdout
    missing = hvac_push("check-config")
    assert missing.returncode == 2 and "FILE" in missing.stderr


def test_the_old_module_entry_points_still_work(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(ALARM_PLANT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    checked = subprocess.run([sys.executable, "-m", "hvac_push.ops.plant_file", str(good)],
                             capture_output=True, text=True, env=env, timeout=60)
    assert checked.returncode == 0 and "ok: 1 points" in checked.stdout
    hashed = subprocess.run([sys.executable, "-m", "hvac_push.transport.auth", "hash", "--name", "old"],
                            input="y" * 40 + "\n", capture_output=True, text=True, env=env, timeout=60)
    assert hashed.returncode == 0 and hashlib.sha256(b"y" * 40).hexdigest() in hashed.stdout
