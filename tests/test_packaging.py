"""setup.py and twisted/plugins (the hvacpush dropin): the wheel a user installs carries the twistd plugin, and
that plugin serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.test_operations import wait_ready
from tests.wsprobe import bound_ports, first_messages

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_provides_the_hvacpush_plugin_that_serves_a_snapshot(tmp_path):
    def run(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300, **kw)

    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT))
    (wheel,) = wheels.glob("hvac_push-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel))

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    twistd = str(venv / "bin" / "twistd")
    help_text = run(twistd, "--help", cwd=tmp_path, env=env).stdout
    assert "hvacpush" in help_text
    # The hvac-push command and the client ship too.
    command_help = run(str(venv / "bin" / "hvac-push"), "--help", cwd=tmp_path, env=env).stdout
    assert "tail" in command_help and "check-config" in command_help and "hash-token" in command_help
    run(str(venv / "bin" / "python"), "-c", "from hvac_push.client import Mirror", cwd=tmp_path, env=env)

    process = subprocess.Popen(
        # reuseport: comes from the second plugin file, so this also checks it ships in the wheel.
        [twistd, "-n", "--pidfile=", "hvacpush", "--listen", "reuseport:0:interface=127.0.0.1",
         "--port-file", str(tmp_path / "ports")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        [port] = bound_ports(tmp_path / "ports", alive=lambda: process.poll() is None)
        # The port file is written once the port listens; /healthz is ready once the simulator has published.
        assert wait_ready(port)["ready"] is True
        (snapshot,) = first_messages(port)
        assert snapshot["type"] == "snapshot" and snapshot["points"]
        tail = run(str(venv / "bin" / "hvac-push"), "tail", f"ws://127.0.0.1:{port}/ws", "--count", "3", cwd=tmp_path, env=env)
        assert len(tail.stdout.splitlines()) == 3
        # The dashboard's files ship in the wheel (package_data) and are served from it.
        for path in ("", "static/app.js", "static/style.css"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10) as response:
                assert response.status == 200 and len(response.read()) > 500, path
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output
    assert not (tmp_path / "twistd.pid").exists()
