"""docs/examples, on hvac_push's public API (hvac_push.ops.service, hvac_push.testing): every example runs for
real, over a socket, in a browser, or under twistd."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytest_twisted
from twisted.application.internet import StreamServerEndpointService

from hvac_push.core.points import Sample
from hvac_push.testing import ScriptedProducer, connect, handshake_status
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, sleep, within
from tests.rawws import RawClient
from tests.wsprobe import bound_ports, first_messages, start_owning

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
TWISTD = str(Path(sys.executable).with_name("twistd"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def example(name: str) -> ModuleType:
    """Import docs/examples/<name>.py under a private module name."""
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def run(*argv: str, timeout: float = 30, env: dict[str, str] | None = None) -> tuple[str, str, int]:
    """Run a process without blocking the reactor; its (stdout, stderr, exit code)."""
    from twisted.internet.utils import getProcessOutputAndValue

    d = getProcessOutputAndValue(argv[0], argv[1:], env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    out, err, code = await within(timeout, d)
    return out.decode(), err.decode(), code


async def http(method: bytes, port: int, path: str) -> tuple[int, bytes]:
    from twisted.web.client import Agent, HTTPConnectionPool, readBody

    agent = Agent(reactor(), pool=HTTPConnectionPool(reactor(), persistent=False))
    response = await within(5, agent.request(method, f"http://127.0.0.1:{port}{path}".encode()))
    return response.code, await within(5, readBody(response))


PLANT = [
    Sample("plant/chiller-1/supply_temp", 6.8, "°C", 1.0),
    Sample("plant/chiller-1/return_temp", 12.1, "°C", 1.0),
    Sample("plant/ahu-1/supply_temp", 14.0, "°C", 1.0),
]


# -- tutorial -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_push_idea_sends_each_connection_the_data_when_it_falls_behind():
    push_idea = example("push_idea")
    listening, poll, stop = push_idea.serve(reactor(), port=0, interval=0.02)
    try:
        client = await within(5, connect(reactor(), listening.getHost().port, "/"))
        first = await within(5, client.next())
        second = await within(5, client.next())
        assert second["version"] > first["version"] >= 0
        assert set(first["data"]) == {"supply_temp", "return_temp"}
        client.sendClose()
        await within(5, client.closed)
    finally:
        stop.set()
        poll.stop()
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_the_python_client_prints_the_points_it_follows():
    running = await start_server()
    running.hub.publish_many(PLANT)
    try:
        out, err, code = await run(
            sys.executable, str(EXAMPLES / "client.py"),
            f"ws://127.0.0.1:{running.port}/ws", "plant/+/supply_temp", "--count", "2",
        )
        assert code == 0, err
        assert sorted(out.splitlines()) == ["plant/ahu-1/supply_temp = 14.0 °C", "plant/chiller-1/supply_temp = 6.8 °C"]
        await eventually(lambda: not running.factory.connections)
    finally:
        await stop_server(running)


CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_the_browser_page_shows_live_points(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    server = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "hvacpush", "--sim-units", "1", "--listen", "tcp:0:interface=127.0.0.1",
         "--port-file", str(tmp_path / "ports")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        [port] = bound_ports(tmp_path / "ports", alive=lambda: server.poll() is None)
        first_messages(port)  # the server is up
        url = (EXAMPLES / "browser.html").as_uri() + f"?ws=ws://127.0.0.1:{port}/ws"
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_function(
                    "document.getElementById('status').textContent.startsWith('live at version')", timeout=15_000
                )
                row = page.locator('tr[id="plant/chiller-1/supply_temp"] td')
                cells = row.all_text_contents()
                assert cells[0] == "plant/chiller-1/supply_temp" and cells[2] == "°C"
                assert float(cells[1]) > 0
                first = page.locator("#status").text_content()
                page.wait_for_function(f"document.getElementById('status').textContent !== {first!r}")
            finally:
                browser.close()
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert "Traceback" not in output, output


# -- extending ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_api_key_protocol_refuses_unknown_keys_and_answers_its_own_message():
    api_key_auth = example("api_key_auth")
    running = await start_server()
    api_key_auth.require_api_keys(running.service, {"k-7f3a": "ops-console"}.get)
    try:
        r = reactor()
        assert await within(5, handshake_status(r, running.port)) == 401
        assert await within(5, handshake_status(r, running.port, headers={"X-Api-Key": "guess"})) == 401
        client = await within(5, connect(r, running.port, headers={"X-Api-Key": "k-7f3a"}))
        assert (await within(5, client.next()))["type"] == "snapshot"
        client.send_json({"type": "whoami", "id": "w-1"})
        assert await within(5, client.next("whoami")) == {"id": "w-1", "type": "whoami", "user": "ops-console"}
        client.send_json({"type": "nonsense"})
        assert (await within(5, client.next("error")))["error"] == "unknown_type"
        client.sendClose()
        await within(5, client.closed)
        assert running.factory.stats.handshakes_denied.get(401) == 2
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_polling_producer_publishes_and_is_restarted_after_a_failed_read():
    polling_producer = example("polling_producer")
    reads = {"n": 0}

    def flaky() -> Any:
        reads["n"] += 1
        if reads["n"] == 1:
            raise OSError("device did not answer")
        return polling_producer.read_thermostat()

    producer = polling_producer.PollingProducer("thermostat", flaky, period=0.05)
    running = await start_server([producer])
    try:
        client = await within(5, connect(reactor(), running.port, "/ws?points=office/%2B/%23"))
        await eventually(lambda: running.hub.get("office/zone-1/room_temp") is not None, timeout=10)
        status = running.service.producers[0].status
        assert status.restarts == 1 and "device did not answer" in (status.last_error or "")
        seen: dict[str, Any] = {}
        while "office/zone-1/heating" not in seen:
            seen.update((await within(5, client.next()))["points"])
        assert seen["office/zone-1/room_temp"]["value"] == 21.7 and seen["office/zone-1/heating"]["value"] is False
        client.sendClose()
        await within(5, client.closed)
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_embedding_in_an_existing_site_and_publishing_from_a_web_handler():
    embed = example("embed")
    services, push = embed.build(reactor(), "tcp:0:interface=127.0.0.1")
    services.startService()
    try:
        # The site's listener, bound in this process on a port the kernel picked: read back from it.
        [site] = [s for s in services if isinstance(s, StreamServerEndpointService)]
        assert site._waitingForPort is not None
        port = (await within(5, site._waitingForPort)).getHost().port
        assert (await http(b"GET", port, "/"))[1].startswith(b"Building management")
        client = await within(5, connect(reactor(), port, "/telemetry"))
        assert (await within(5, client.next()))["type"] == "snapshot"
        code, body = await http(b"POST", port, "/api/setpoint?zone=zone-2&value=22.5")
        assert code == 200 and body.startswith(b"version ")
        update = await within(5, client.next("update"))
        assert update["points"]["office/zone-2/setpoint"]["value"] == 22.5
        assert (await http(b"POST", port, "/api/setpoint?value=warm"))[0] == 400
        code, metrics = await http(b"GET", port, "/metrics")
        assert code == 200 and b"hvacpush_clients 1.0" in metrics
        client.sendClose()
        await within(5, client.closed)
    finally:
        await services.stopService()
    assert not push.factory.connections


@pytest.mark.slow
def test_the_tac_file_runs_the_embedded_application_under_twistd(tmp_path):
    def start(ports: list[int]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "-y", str(EXAMPLES / "building.tac")],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{EXAMPLES}",
                 "BUILDING_LISTEN": f"tcp:{ports[0]}:interface=127.0.0.1"},
        )

    # The .tac file has no --port-file: a picked port, checked to be held by this twistd (another on a clash).
    process, [port] = start_owning(start)
    try:
        (snapshot,) = first_messages(port, path="/telemetry")
        assert snapshot["type"] == "snapshot"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output, output


# -- deployment -----------------------------------------------------------------


def unit_exec_start() -> list[str]:
    text = (EXAMPLES / "hvac-push.service").read_text()
    (line,) = [l for l in text.splitlines() if l.startswith("ExecStart=")]
    return shlex.split(line.partition("=")[2])


def test_the_systemd_unit_runs_twistd_with_options_that_parse():
    from twisted.scripts.twistd import ServerOptions

    argv = unit_exec_start()
    assert argv[0].endswith("/twistd")
    config = ServerOptions()
    config.parseOptions(argv[1:])
    assert config["nodaemon"] and config.subCommand == "hvacpush"
    sub = config.subOptions
    assert sub["log-format"] == "json" and sub["listen"] == ["tcp:8080:interface=127.0.0.1"]
    text = (EXAMPLES / "hvac-push.service").read_text()
    stop_seconds = float(re.search(r"^TimeoutStopSec=(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    assert stop_seconds > sub["drain-timeout"] + 10  # drain, then the producers' stop bound


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.mark.slow
def test_tls_listener_as_documented_serves_wss(tmp_path):
    pytest.importorskip("cryptography")
    key, cert = _self_signed(tmp_path)
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "hvacpush", "--sim-units", "1",
         "--listen", f"ssl:0:privateKey={key.name}:certKey={cert.name}:interface=127.0.0.1",
         "--port-file", str(tmp_path / "ports")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        [port] = bound_ports(tmp_path / "ports", alive=lambda: process.poll() is None)
        context = ssl.create_default_context(cafile=str(cert))
        client = RawClient(port, host="localhost", ssl_context=context)
        assert client.message()["type"] == "snapshot"
        client.send_close()
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output, output


def _nginx(tmp_path: Path, site: str) -> tuple[subprocess.Popen[str], int]:
    """nginx serving C{site} (a docs example, its C{listen 443 ssl} made plain) and the front port it holds.

    nginx cannot report a port it was given as 0: the port is picked, and
    L{start_owning} checks nginx itself listens on it (another port on a clash).
    """
    assert NGINX is not None  # (the skipif)
    nginx = NGINX
    site = re.sub(r"^\s*ssl_certificate.*$", "", site, flags=re.M)
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)

    def start(ports: list[int]) -> subprocess.Popen[str]:
        front_site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{ports[0]};")
        (tmp_path / "nginx.conf").write_text(
            f"daemon off; worker_processes 1; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
            "events { worker_connections 64; }\n"
            f"http {{ access_log off; client_body_temp_path {temp}; proxy_temp_path {temp};\n"
            f"fastcgi_temp_path {temp}; uwsgi_temp_path {temp}; scgi_temp_path {temp};\n{front_site}\n}}\n"
        )
        return subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    proxy, [front] = start_owning(start)
    return proxy, front


@pytest.mark.slow
@pytest.mark.skipif(NGINX is None, reason="needs nginx (apt-get install nginx-light)")
def test_nginx_config_proxies_the_websocket_upgrade(tmp_path):
    server = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "hvacpush", "--sim-units", "1", "--listen", "tcp:0:interface=127.0.0.1",
         "--port-file", str(tmp_path / "ports")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        [backend] = bound_ports(tmp_path / "ports", alive=lambda: server.poll() is None)
        site = (EXAMPLES / "nginx.conf").read_text().replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{backend};")
        proxy, front = _nginx(tmp_path, site)
    except BaseException:
        server.kill()
        server.communicate(timeout=30)
        raise
    try:
        first_messages(backend)  # the server is up
        client = RawClient(front)
        snapshot, update = client.message(), client.message()
        assert snapshot["type"] == "snapshot" and update["type"] == "update"
        client.send_close()
        client.close()
    finally:
        proxy.send_signal(signal.SIGQUIT)
        server.send_signal(signal.SIGTERM)
        proxy_output, _ = proxy.communicate(timeout=30)
        server.communicate(timeout=30)
    assert "emerg" not in proxy_output, proxy_output


@pytest.mark.slow
@pytest.mark.skipif(NGINX is None, reason="needs nginx (apt-get install nginx-light)")
def test_nginx_cluster_config_moves_clients_of_a_dead_edge_to_the_other(tmp_path):
    """docs/examples/nginx-cluster.conf with a mosquitto broker, a collector and two edges (deployment.md)."""
    from tests.brokers import Mosquitto
    from tests.test_cluster import _get_health, _listening_node, _stop

    broker = Mosquitto(tmp_path)
    broker.start()
    url = f"mqtt://127.0.0.1:{broker.port}/hvac"
    nodes: dict[str, subprocess.Popen[str]] = {}
    edge_ports: dict[str, int] = {}
    try:
        nodes["collector"], _ = _listening_node(tmp_path, "collector", "--sim-units", "1", "--sim-rate", "20",
                                                "--publish", url, "--listen", "tcp:0:interface=127.0.0.1")
        for name in ("edge-a", "edge-b"):
            nodes[name], [edge_ports[name]] = _listening_node(
                tmp_path, name, "--subscribe", url, "--listen", "tcp:0:interface=127.0.0.1"
            )
        site = (EXAMPLES / "nginx-cluster.conf").read_text()
        site = site.replace("server 127.0.0.1:8081", f"server 127.0.0.1:{edge_ports['edge-a']}")
        site = site.replace("server 127.0.0.1:8082", f"server 127.0.0.1:{edge_ports['edge-b']}")
        proxy, front = _nginx(tmp_path, site)
    except BaseException:
        for process in nodes.values():
            _stop(process)
        broker.kill()
        raise
    try:
        epochs = {name: _get_health(port)["epoch"] for name, port in edge_ports.items()}
        client = RawClient(front)
        snapshot = client.message()
        assert snapshot["type"] == "snapshot" and snapshot["points"]
        served_by = next(name for name, epoch in epochs.items() if epoch == snapshot["epoch"])
        other = next(name for name in epochs if name != served_by)

        nodes[served_by].kill()  # the edge crashes under its client
        nodes[served_by].wait(timeout=10)
        assert client.at_eof(timeout=10)
        client.close()
        for _ in range(3):  # every reconnect through nginx lands on the live edge, with a full resync
            moved = RawClient(front, path=f"/ws?since={snapshot['version']}&epoch={snapshot['epoch']}")
            resync = moved.message()
            assert resync["type"] == "snapshot" and resync["resync"] is True
            assert resync["epoch"] == epochs[other]
            assert set(snapshot["points"]) <= set(resync["points"])
            moved.send_close()
            moved.close()
    finally:
        proxy.send_signal(signal.SIGQUIT)
        proxy_output, _ = proxy.communicate(timeout=30)
        for process in nodes.values():
            _stop(process)
        broker.kill()
    assert "emerg" not in proxy_output, proxy_output


# -- the Python client (plain asyncio: the examples run as processes against twistd) ------


def _example_lines(name: str, *args: str, count: int, timeout: float = 30) -> tuple[list[str], int | None]:
    """Run docs/examples/<name> until it printed C{count} lines, exited, or C{timeout} passed."""
    from tests.clientserver import process_lines

    return process_lines([sys.executable, str(EXAMPLES / name), *args], count, timeout)


@pytest.mark.slow
def test_mirror_example_prints_every_point_then_each_change(tmp_path):
    """docs/clients.md's script that mirrors the plant in under ten lines, run against a real server."""
    from tests.clientserver import running

    clients = (ROOT / "docs" / "clients.md").read_text(encoding="utf-8")
    first_block = clients.split("```", 2)[1]
    assert "literalinclude} examples/mirror.py" in first_block
    code = (EXAMPLES / "mirror.py").read_text(encoding="utf-8")
    assert len([line for line in code.splitlines() if line.strip()]) < 10
    with running(tmp_path, "--sim-seed", "5", "--sim-units", "2", "--sim-rate", "40") as server:
        points = set(server.snapshot()["points"])
        lines, _ = _example_lines("mirror.py", server.url, count=len(points) + 10)
    assert len(lines) == len(points) + 10, lines
    first = [line.split()[0] for line in lines[: len(points)]]
    assert set(first) == points  # the current state of every point first
    assert all(line.split()[0] in points and line.split()[-1] in ("ok", "stale") for line in lines)
    assert any(" °C " in line for line in lines)


@pytest.mark.slow
def test_the_readme_embedding_example_runs_as_pasted(tmp_path):
    """The README's block that builds a PushService, run as a script: its producer's point and the published one arrive."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Embedding and extending", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.count("listenTCP(8080,") == 1
    script = tmp_path / "embedding.py"

    def start(ports: list[int]) -> subprocess.Popen[str]:
        script.write_text(code.replace("listenTCP(8080,", f"listenTCP({ports[0]},"), encoding="utf-8")
        return subprocess.Popen(
            [sys.executable, str(script)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    # The README's code cannot report its port: a picked one, checked to be held by the script (another on a clash).
    process, [port] = start_owning(start)
    try:
        deadline = time.monotonic() + 20
        while True:  # the producer's first sample may come a moment after the listener
            (snapshot,) = first_messages(port, path="/telemetry", timeout=20)
            if "site/room-1/temp" in snapshot["points"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert snapshot["points"]["site/room-1/temp"]["value"] == 21.5
        assert snapshot["points"]["site/ahu-1/supply_temp"]["value"] == 14.2
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM) and "Traceback" not in output, output


@pytest.mark.slow
def test_the_python_client_with_count_prints_exactly_that_many_lines_and_exits(tmp_path):
    from tests.clientserver import running

    with running(tmp_path, "--sim-seed", "5", "--sim-units", "2", "--sim-rate", "40") as server:
        points = set(server.snapshot()["points"])
        assert len(points) > 7  # the first message alone holds more than the count
        for count in (7, len(points) + 5):  # within the snapshot, and past it into the updates
            lines, code = _example_lines("client.py", server.url, "--count", str(count), count=count + 50)
            assert code == 0 and len(lines) == count, lines
            assert all(line.split(" = ")[0] in points for line in lines), lines
        lines, code = _example_lines("client.py", server.url, "--count", "0", count=10)
        assert code == 2 and "--count: must be 1 or more" in lines[-1], lines


@pytest.mark.slow
def test_alarm_panel_example_lists_acknowledges_and_shows_history(tmp_path):
    from tests.clientserver import ALARM_PLANT, running

    (tmp_path / "plant.toml").write_text(ALARM_PLANT, encoding="utf-8")
    with running(tmp_path, "--config", "plant.toml") as server:
        deadline = time.monotonic() + 15
        while not server.snapshot()["alarms"]:  # the first sample raises the alarm
            assert time.monotonic() < deadline
            time.sleep(0.2)
        lines, code = _example_lines("alarm_panel.py", server.url, "--ack", "--seconds", "1", count=100)
        assert code == 0, lines
        again = server.snapshot()
    text = "\n".join(lines)
    assert lines[0] == "4 temperatures, 1 alarms listed"
    assert "active       major    plant/chiller-1/supply_temp above -100" in text
    assert "samples of plant/chiller-1/supply_temp" in text
    assert "acknowledged major    plant/chiller-1/supply_temp above -100" in text
    assert lines[-1].startswith("round trip ") and "Traceback" not in text
    assert [a["state"] for a in again["alarms"]] == ["acknowledged"]
