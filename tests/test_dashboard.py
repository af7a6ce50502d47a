"""hvac_push/static (the dashboard) served by hvac_push.transport.web: the live page at C{/}, in a real headless
Chromium against a real twistd server.

Playwright's sync API cannot run under the Twisted reactor, so every server
here is a C{twistd} subprocess and these are plain (non-Twisted) tests. A
missing Chromium is a failure, not a skip: C{scripts/bootstrap --test}
installs Debian's C{chromium}.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from hvac_push.testing import TEXT, decode_frame, json_object, upgrade_request
from hvac_push.transport.web import STATIC_DIR
from tests.wsprobe import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).with_name("twistd"))
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DESKTOP = {"width": 1600, "height": 900}
PHONE = {"width": 390, "height": 844}
POINT = "plant/chiller-1/supply_temp"
ROW = f'[data-point="{POINT}"]'


# -- a twistd server in a subprocess ------------------------------------------


class Server:
    """C{twistd -n hvacpush} on a loopback port, its log in a file."""

    def __init__(self, workdir: Path, port: int, *args: str):
        self.workdir = workdir
        self.port = port
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    def start(self) -> "Server":
        log = self.workdir / f"twistd-{self.port}-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "hvacpush", "--listen", f"tcp:{self.port}:interface=127.0.0.1", *self.args],
                cwd=self.workdir, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60  # a bound, not a speed claim: a loaded machine starts twistd slowly
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"twistd exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"twistd did not become ready:\n{self.output()}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def kill(self) -> None:
        """End the server abruptly, like a crash (no close frames)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self.logs if log.exists())


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def start_server(workdir: Path, *args: str, port: int | None = None) -> Server:
    return Server(workdir, port or free_port(), *args).start()


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Six simulated units with derived points (~130 points), shared by the tests that only watch."""
    server = start_server(tmp_path_factory.mktemp("plant"), "--sim-units", "6", "--sim-seed", "11", "--derived")
    yield server
    server.stop()
    assert "Traceback" not in server.output()


# -- the browser -----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard tests need Debian's Chromium. "
            "Run scripts/bootstrap --test as root, or: apt-get install chromium"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: .venv/bin/pip install '.[test]' (never `playwright install`)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


class Watched:
    """A page plus what it did: errors, requests, WebSockets and their first frames."""

    def __init__(self, context: Any):
        self.context = context
        self.page = context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.sockets: list[dict[str, Any]] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", self._console)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("websocket", self._websocket)

    def _console(self, message: Any) -> None:
        text = message.text
        # Chromium itself logs refused WebSocket connections while a server is down.
        if message.type == "error" and not text.startswith("WebSocket connection to"):
            self.errors.append(f"console: {text}")
        # The page logs the server's errors (rate_limited, bad_message...): it must cause none.
        if text.startswith("hvac-push: server error"):
            self.errors.append(f"console: {text}")

    def _websocket(self, ws: Any) -> None:
        # frames: the first five received; sent: everything the page sent; errors: the server's error messages.
        record: dict[str, Any] = {"url": ws.url, "frames": [], "sent": [], "errors": []}
        self.sockets.append(record)

        def received(payload: Any) -> None:
            if not isinstance(payload, str):
                return
            if len(record["frames"]) < 5:
                record["frames"].append(json.loads(payload))
            if '"type":"error"' in payload:
                record["errors"].append(json.loads(payload))

        def sent(payload: Any) -> None:
            if isinstance(payload, str):
                record["sent"].append(json.loads(payload))

        ws.on("framereceived", received)
        ws.on("framesent", sent)

    def live(self, timeout: float = 10.0) -> None:
        self.page.wait_for_selector('#conn[data-state="live"]', timeout=timeout * 1000)

    def row(self, point_id: str = POINT) -> tuple[int, Any, str, str]:
        """(version, value, shown number, shown unit) of one point's row."""
        version, value, number, unit = self.page.eval_on_selector(
            f'[data-point="{point_id}"]',
            "r => [Number(r.dataset.version), r.dataset.value,"
            " r.querySelector('.num').textContent, r.querySelector('.uom').textContent]",
        )
        return version, json.loads(value), number, unit


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport=DESKTOP)
    watched = Watched(context)
    yield watched
    context.close()
    assert not watched.errors, watched.errors


# -- a raw WebSocket reader, independent of the page ----------------------------------


class Probe:
    """Reads the server's messages on its own connection, without blocking longer than asked."""

    def __init__(self, port: int, path: str = "/ws"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(upgrade_request(path, {"Host": f"127.0.0.1:{port}"}))
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._read(5.0)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        #: point id -> {version: value}, everything this probe has seen
        self.seen: dict[str, dict[int, Any]] = {}
        self.epoch: str | None = None

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return False
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("probe: server closed")
        self.buffer += chunk
        return True

    def _frame(self) -> tuple[int, bytes] | None:
        decoded = decode_frame(self.buffer)
        if decoded is None:
            return None
        frame, end = decoded
        self.buffer = self.buffer[end:]
        return frame.opcode, frame.payload

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON message within C{timeout} seconds, or None."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is not None:
                opcode, payload = frame
                if opcode == TEXT:
                    message = json_object(payload)
                    self._note(message)
                    return message
                continue
            if not self._read(deadline - time.monotonic()):
                return None

    def _note(self, message: dict[str, Any]) -> None:
        if message.get("type") in ("snapshot", "update"):
            self.epoch = message["epoch"]
            for point_id, point in message["points"].items():
                self.seen.setdefault(point_id, {})[point["version"]] = point["value"]

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.next(max(0.0, deadline - time.monotonic())) is not None:
            pass

    def close(self) -> None:
        self.sock.close()


def matches_probe(watched: Watched, probe: Probe, point_id: str = POINT, timeout: float = 5.0) -> tuple[int, Any]:
    """Wait until the page shows a (version, value) of C{point_id} that the probe saw; return it."""
    deadline = time.monotonic() + timeout
    while True:
        version, value, _, _ = watched.row(point_id)
        seen = probe.seen.get(point_id, {})
        if version in seen:
            assert seen[version] == value, (point_id, version, seen[version], value)
            return version, value
        if time.monotonic() > deadline:
            raise AssertionError(f"page shows {point_id} v{version}={value!r}; probe saw {sorted(seen)[-5:]}")
        probe.drain(0.05)


def shown(value: float) -> str:
    return f"{value:.1f}"


# -- tests ---------------------------------------------------------------------------------


def test_the_page_and_its_assets_come_from_the_server(plant: Server) -> None:
    assets = [("", "text/html"), ("static/app.js", "text/javascript"), ("static/style.css", "text/css")]
    # Every ES module the page loads (app.js imports the others).
    modules = sorted(p.name for p in Path(STATIC_DIR).glob("*.js"))
    assert "app.js" in modules and len(modules) > 1, modules
    assets += [(f"static/{name}", "text/javascript") for name in modules if name != "app.js"]
    for path, kind in assets:
        with urllib.request.urlopen(plant.url + path, timeout=5) as response:
            assert response.headers["content-type"].startswith(kind), (path, response.headers["content-type"])
            body = response.read().decode("utf-8")
        assert "http://" not in body and "https://" not in body, f"{path} refers to another site"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(plant.url + "static/", timeout=5)
    assert e.value.code == 404  # no directory listing


IMPORT = re.compile(r"""^import\s[^;]*?from\s+'(?P<path>[^']+)';""", re.M | re.S)


def test_the_modules_import_only_each_other_without_circles() -> None:
    """Plain ES modules, no build step: every import is a sibling file, and the graph has no cycle."""
    static = Path(STATIC_DIR)
    graph: dict[str, list[str]] = {}
    for module in sorted(static.glob("*.js")):
        text = module.read_text(encoding="utf-8")
        assert text.startswith("/* "), f"{module.name} has no header comment saying why it exists"
        imports = [m.group("path") for m in IMPORT.finditer(text)]
        assert all(p.startswith("./") and (static / p[2:]).is_file() for p in imports), (module.name, imports)
        graph[module.name] = [p[2:] for p in imports]
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join(path + (name,))}"
        if name not in order:
            for dependency in graph[name]:
                visit(dependency, path + (name,))
            order.append(name)

    visit("app.js", ())
    assert sorted(order) == sorted(graph), f"not reached from app.js: {set(graph) - set(order)}"


def test_every_unit_is_a_card_with_its_points_and_nothing_is_fetched_from_elsewhere(
    plant: Server, watched: Watched
) -> None:
    probe = Probe(plant.port)
    try:
        snapshot = probe.next(5)
    finally:
        probe.close()
    assert snapshot is not None and snapshot["type"] == "snapshot"
    page = watched.page
    page.goto(plant.url)
    watched.live()
    page.wait_for_function("() => document.querySelectorAll('.card').length === 6")
    units = page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.unit)")
    assert sorted(units) == sorted(f"plant/{u}" for u in ("chiller-1", "crac-1", "ahu-1", "chiller-2", "crac-2", "ahu-2"))
    # Every point of the snapshot is on the page (derived ones as chips, notes or site totals)...
    on_page = set(page.eval_on_selector_all("[data-point]", "els => els.map(e => e.dataset.point)"))
    assert set(snapshot["points"]) <= on_page, set(snapshot["points"]) - on_page
    # ... in the card of its unit, each measured point as a row with its value and unit of measure.
    rows = page.eval_on_selector_all(
        ".card .pt",
        "rows => rows.map(r => [r.closest('.card').dataset.unit, r.dataset.point, r.dataset.status,"
        " r.querySelector('.num').textContent, r.querySelector('.uom').textContent, !!r.querySelector('canvas.spark')])",
    )
    assert len(rows) == 6 * 7
    for unit_key, point_id, status, number, unit, sparkline in rows:
        assert point_id.startswith(unit_key + "/") and status == "ok" and number.strip() and sparkline, point_id
        if point_id.endswith("_temp") or point_id.endswith("setpoint"):
            assert unit == "°C"
        if point_id.endswith("/compressor"):
            assert number in ("ON", "OFF")
    assert page.is_visible('#totals [data-point="plant/site/energy_kwh"]')
    assert "6 units" in page.text_content("#summary")
    origin = plant.url
    assert all(url.startswith(origin) or url.startswith("data:") for url in watched.requests), watched.requests
    assert {s["url"].split("?")[0] for s in watched.sockets} == {f"ws://127.0.0.1:{plant.port}/ws"}


def test_a_published_value_is_on_the_page_within_a_second(plant: Server, watched: Watched) -> None:
    page = watched.page
    page.goto(plant.url)
    watched.live()
    probe = Probe(plant.port)
    try:
        probe.next(5)  # the snapshot
        for _ in range(3):
            # The next time the server publishes this point, the probe hears of it...
            while True:
                message = probe.next(5)
                assert message is not None, "no update from the server"
                if message["type"] == "update" and POINT in message["points"]:
                    break
            heard = time.monotonic()
            version, published = message["points"][POINT]["version"], message["points"][POINT]["ts"]
            # ... and within a second of its publication the page shows it (or something newer).
            while True:
                shown_version, value, number, unit = watched.row()
                late = max(time.monotonic() - heard, time.time() - published)
                if shown_version >= version:
                    break
                assert late < 1.0, f"page still at v{shown_version}, server published v{version}"
                page.wait_for_timeout(10)
            assert late < 1.0, f"v{version} took {late:.3f} s to reach the page"
            while shown_version not in probe.seen[POINT]:
                assert probe.next(2) is not None
            assert value == probe.seen[POINT][shown_version]
            assert (number, unit) == (shown(value), "°C")
    finally:
        probe.close()


def test_fahrenheit_is_a_toggle_that_sticks(plant: Server, watched: Watched) -> None:
    page = watched.page
    page.goto(plant.url)
    watched.live()
    page.click("#temp-f")
    _, celsius, number, unit = watched.row()
    assert unit == "°F" and abs(float(number) - (celsius * 9 / 5 + 32)) <= 0.051
    _, kw, number, unit = watched.row("plant/chiller-1/power")
    assert unit == "kW" and number == shown(kw)  # only temperatures change
    page.reload()
    watched.live()
    assert page.get_attribute("#temp-f", "aria-pressed") == "true"
    assert watched.row()[3] == "°F"
    page.click("#temp-c")
    assert watched.row()[3] == "°C"


def test_after_a_server_restart_the_page_reconnects_by_itself_and_shows_the_new_server(
    workdir: Path, watched: Watched
) -> None:
    port = free_port()
    first = start_server(workdir, "--sim-units", "3", "--sim-seed", "1", port=port)
    second: Server | None = None
    try:
        page = watched.page
        page.goto(first.url)
        watched.live()
        page.evaluate("window.sameDocument = true")
        old_epoch = watched.sockets[0]["frames"][0]["epoch"]
        first.kill()
        page.wait_for_selector('#conn[data-state="reconnecting"]', timeout=5000)
        assert page.is_visible("#offline-banner")

        second = start_server(workdir, "--sim-units", "3", "--sim-seed", "2", port=port)
        probe = Probe(port)
        try:
            watched.live(timeout=15)
            assert page.evaluate("window.sameDocument === true"), "the page reloaded"
            assert not page.is_visible("#offline-banner")
            # It asked to resume where it was; the new server said: start over.
            resumed = next(s for s in watched.sockets[1:] if s["frames"])
            assert f"epoch={old_epoch}" in resumed["url"] and "since=" in resumed["url"], resumed["url"]
            answer = resumed["frames"][0]
            assert answer["type"] == "snapshot" and answer.get("resync") is True, answer
            # It shows the new server's values: a version and value the new server sent.
            probe.next(5)
            matches_probe(watched, probe)
            assert probe.epoch == answer["epoch"] != old_epoch
        finally:
            probe.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert "Traceback" not in first.output() + (second.output() if second else "")


class CuttableProxy:
    """A loopback TCP relay whose connections a test can cut, leaving the server up."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_a_dropped_connection_resumes_from_the_last_version_with_an_update(
    plant: Server, watched: Watched
) -> None:
    proxy = CuttableProxy(plant.port)
    try:
        page = watched.page
        page.goto(f"http://127.0.0.1:{proxy.port}/")
        watched.live()
        page.evaluate("window.sameDocument = true")
        page.wait_for_timeout(300)
        epoch = watched.sockets[0]["frames"][0]["epoch"]
        proxy.cut()
        page.wait_for_function("() => document.querySelector('#conn').dataset.state !== 'live'", timeout=5000)
        watched.live(timeout=10)
        page.wait_for_timeout(300)
        resumed = watched.sockets[-1]
        assert f"epoch={epoch}" in resumed["url"] and "since=" in resumed["url"], resumed["url"]
        first = resumed["frames"][0]
        assert first["type"] == "update" and first["epoch"] == epoch, first
        assert page.evaluate("window.sameDocument === true"), "the page reloaded"
        assert page.eval_on_selector_all(".card", "c => c.length") == 6
        probe = Probe(plant.port)
        try:
            probe.next(5)
            matches_probe(watched, probe)
        finally:
            probe.close()
    finally:
        proxy.close()


def test_screenshots_of_a_control_room_screen_and_a_phone(plant: Server, watched: Watched, browser: Any) -> None:
    """test-artifacts/dashboard.png and dashboard-phone.png, for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = watched.page
    page.goto(plant.url)
    watched.live()
    # Every chart is filled from the server's history (paced under its rate limit)...
    page.wait_for_selector('body[data-history-pending="0"]', state="attached", timeout=10000)
    filled = page.eval_on_selector_all(
        ".pt canvas.spark", "cs => cs.filter(c => c.width > 0).length"
    )
    assert filled == 6 * 7
    page.wait_for_timeout(300)  # ... and drawn on the next frame
    assert page.evaluate("document.documentElement.scrollWidth") <= DESKTOP["width"]
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
    phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        small = Watched(phone)
        small.page.goto(plant.url)
        small.live()
        small.page.wait_for_selector('body[data-history-pending="0"]', state="attached", timeout=10000)
        small.page.wait_for_timeout(300)
        width = small.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the phone layout scrolls sideways ({width}px)"
        small.page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"))
        assert not small.errors, small.errors
    finally:
        phone.close()


ALARM_CONFIG = """\
[simulator]
units = 3
rate = 30
seed = 5

# Far below anything the chiller can reach: the alarm is active as soon as data flows.
[units.chiller-1]
source = "simulator"

[units.chiller-1.points.load]
unit = "kW"
alarm = { low = 100000.0, severity = "critical" }
"""
ALARM = "plant/chiller-1/load:low"


def test_an_alarm_appears_and_can_be_acknowledged(workdir: Path, watched: Watched) -> None:
    (workdir / "plant.toml").write_text(ALARM_CONFIG)
    server = start_server(workdir, "--config", str(workdir / "plant.toml"))
    try:
        page = watched.page
        page.goto(server.url)
        watched.live()
        item = f'#alarm-list [data-alarm="{ALARM}"]'
        page.wait_for_selector(item, timeout=10000)
        assert page.get_attribute(item, "data-state") == "active"
        assert page.get_attribute(item, "data-severity") == "critical"
        assert page.get_attribute('.card[data-unit="plant/chiller-1"]', "data-alarm") == "critical"
        assert page.get_attribute('[data-point="plant/chiller-1/load"]', "data-alarmed") == "true"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-alarm.png"))

        page.click(f"{item} button.ack")
        page.wait_for_selector(f'{item}[data-state="acknowledged"]', timeout=3000)
        assert page.query_selector(f"{item} button.ack") is None
        # The server agrees: a new client's snapshot lists it as acknowledged.
        probe = Probe(server.port)
        try:
            snapshot = probe.next(5)
            assert snapshot is not None
            listed = {a["id"]: a["state"] for a in snapshot.get("alarms", [])}
            assert listed.get(ALARM) == "acknowledged", listed
        finally:
            probe.close()
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_a_dead_device_looks_down_and_the_badge_does_not_say_live(workdir: Path, watched: Watched) -> None:
    """A plant file whose Modbus device is unreachable: its points are shown down, not fine (issue: honest state)."""
    dead = free_port()  # nothing listens here
    (workdir / "plant.toml").write_text(f"""
[modbus.plc]
host = "127.0.0.1"
port = {dead}
poll_interval = 0.2
timeout = 0.2

[units.chiller-1]
source = "modbus.plc"

[units.chiller-1.points.supply_temp]
register = 0
unit = "°C"

[units.chiller-1.points.return_temp]
register = 1
unit = "°C"
""")
    server = start_server(workdir, "--config", str(workdir / "plant.toml"))
    try:
        page = watched.page
        page.goto(server.url)
        watched.live()
        page.wait_for_function(
            "() => document.querySelectorAll('.card .pt[data-status=\"down\"]').length === 2", timeout=10000
        )
        assert page.get_attribute('.card[data-unit="plant/chiller-1"]', "data-status") == "down"
        tags = page.eval_on_selector_all(".card .pt .pt-tag", "tags => tags.map(t => t.textContent)")
        assert tags == ["DOWN", "DOWN"]  # said in words, not only in colour
        label = page.text_content("#conn-label") or ""
        assert "Live" not in label and "no live data" in label, label
        assert page.get_attribute("#conn", "data-plant") == "blind"
        assert "2 down" in (page.text_content("#summary") or "")
    finally:
        server.stop()
    assert "Traceback" not in server.output()


# -- the server's limits, served to the page -------------------------------------------

#: Non-default limits on the command line, as a (client_limits key, value) list.
LIMITED = {
    "client_rate": 2.0, "client_burst": 4, "max_message_size": 4096, "max_subscriptions": 7,
    "history_window": 300.0, "history_max_samples": 2000, "auth_required": False,
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One simulated unit (7 charts) behind a low message rate: 2 per second, a burst of 4."""
    server = start_server(
        tmp_path_factory.mktemp("limited"), "--sim-units", "1", "--sim-seed", "3",
        "--client-rate", "2", "--client-burst", "4", "--max-message-size", "4096",
        "--max-subscriptions", "7", "--history-window", "300",
    )
    yield server
    server.stop()
    assert "Traceback" not in server.output()


def get_json(url: str) -> tuple[Any, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers, json.loads(response.read())


def test_client_limits_json_serves_the_limits_given_on_the_command_line(limited: Server, plant: Server) -> None:
    headers, document = get_json(limited.url + "client-limits.json")
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert document == LIMITED
    # Without options: the defaults of Limits and History.
    _, document = get_json(plant.url + "client-limits.json")
    assert document == {
        "client_rate": 20.0, "client_burst": 40, "max_message_size": 65536, "max_subscriptions": 256,
        "history_window": 900.0, "history_max_samples": 2000, "auth_required": False,
    }


def test_client_limits_of_a_factory_without_history_say_so() -> None:
    from twisted.internet.task import Clock

    from hvac_push.core.hub import Hub
    from hvac_push.transport.fanout import PushServerFactory
    from hvac_push.transport.limits import Limits
    from hvac_push.transport.web import client_limits

    factory = PushServerFactory(Hub(), Clock(), limits=Limits(client_rate=0, max_subscriptions=3))
    assert client_limits(factory) == {
        "client_rate": 0, "client_burst": 40, "max_message_size": 65536, "max_subscriptions": 3,
        "history_window": None, "history_max_samples": None, "auth_required": False,
    }


def test_the_page_paces_its_requests_by_the_limits_the_server_serves(limited: Server, watched: Watched) -> None:
    page = watched.page
    page.goto(limited.url)
    watched.live()
    loaded = page.evaluate("({...document.documentElement.dataset})")
    assert loaded["terms"] == "server", loaded
    assert (float(loaded["clientRate"]), int(loaded["clientBurst"])) == (2.0, 4)
    assert float(loaded["historyWindow"]) == 300.0
    # It sends inside the server's bucket: 90 % of its rate, a burst of 2 of its 4.
    assert (float(loaded["sendRate"]), int(loaded["sendBurst"])) == (1.8, 2)
    # Every chart is filled from history: 7 requests (and a ping) that the default pace
    # (20 at once) would have sent in one go, against a server that allows 4.
    page.wait_for_selector('body[data-history-pending="0"]', state="attached", timeout=20000)
    assert len(watched.sockets) == 1
    socket_record = watched.sockets[0]
    asked = [m["point"] for m in socket_record["sent"] if m["type"] == "history"]
    rows = page.eval_on_selector_all(".card .pt", "rows => rows.map(r => r.dataset.point)")
    assert len(rows) == 7 and sorted(asked) == sorted(rows), (asked, rows)
    # ... and the server refused none of them.
    assert socket_record["errors"] == []


def test_without_client_limits_json_the_page_uses_the_default_limits(plant: Server, watched: Watched) -> None:
    page = watched.page
    page.route("**/client-limits.json", lambda route: route.abort())
    page.goto(plant.url)
    watched.live()
    loaded = page.evaluate("({...document.documentElement.dataset})")
    assert loaded["terms"] == "fallback", loaded
    assert (float(loaded["clientRate"]), int(loaded["clientBurst"])) == (20.0, 40)
    assert (float(loaded["sendRate"]), int(loaded["sendBurst"])) == (18.0, 20)
    page.wait_for_selector('body[data-history-pending="0"]', state="attached", timeout=10000)
    assert page.eval_on_selector_all(".card", "c => c.length") == 6
    assert all(record["errors"] == [] for record in watched.sockets)
    # Chromium reports the aborted request on the console; nothing else may be there.
    watched.errors[:] = [e for e in watched.errors if not e.startswith("console: Failed to load resource")]


# -- signing in to a server that needs a token -------------------------------------------

SECRET = b"a shared secret for the dashboard tests, 32 bytes or more"


def mint(lifetime: float, points: list[str] | None = None, secret: bytes = SECRET) -> str:
    """An HS256 token as a site's identity system would hand one out."""
    import jwt

    claims = {"points": points or ["plant/#"], "exp": int(time.time() + lifetime), "sub": "control-room"}
    return jwt.encode(claims, secret, algorithm="HS256")


def start_guarded(workdir: Path) -> Server:
    secret = workdir / "jwt-secret"
    secret.write_bytes(SECRET)
    return start_server(workdir, "--sim-units", "1", "--sim-seed", "5", "--auth-jwt-secret-file", str(secret))


def session_token(page: Any) -> Any:
    return page.evaluate("sessionStorage.getItem('hvac-push.token')")


def test_without_a_token_the_page_is_a_sign_in_form_and_shows_no_data(workdir: Path, watched: Watched) -> None:
    server = start_guarded(workdir)
    try:
        _, document = get_json(server.url + "client-limits.json")
        assert document["auth_required"] is True
        page = watched.page
        page.goto(server.url)
        page.wait_for_selector('#signin[data-reason="required"]', timeout=10000)
        page.wait_for_selector('#conn[data-state="signed-out"]', state="attached", timeout=5000)
        assert page.get_attribute("#signin-token", "type") == "password"
        assert "needs an access token" in page.inner_text("#signin-note")
        assert page.is_visible("#signin-token") and not page.is_visible("#units")
        time.sleep(1.0)
        # It never knocked without a token, and there is nothing to show.
        assert watched.sockets == []
        assert page.eval_on_selector_all(".card", "c => c.length") == 0
        assert page.is_hidden("#signout")
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_a_token_in_the_fragment_goes_live_and_leaves_no_trace_in_urls_or_logs(
    workdir: Path, watched: Watched
) -> None:
    server = start_guarded(workdir)
    token = mint(600)
    page = watched.page
    try:
        page.goto(server.url + "#token=" + token)
        watched.live()
        # The fragment is gone from the address bar (and so from history); the session keeps the token.
        assert "#" not in page.url and token not in page.url, page.url
        assert page.evaluate("location.hash") == ""
        assert session_token(page) == token
        page.wait_for_selector(ROW, timeout=10000)
        _, value, number, _ = watched.row()
        assert isinstance(value, float) and number == shown(value)
        assert page.is_hidden("#signin") and page.is_visible("#signout")
        # Offered as a subprotocol, never in the URL.
        assert len(watched.sockets) == 1 and token not in watched.sockets[0]["url"]

        # A new token while live refreshes the grant on the same connection.
        fresh = mint(900)
        page.click("#token-change")
        page.fill("#signin-token", fresh)
        page.click("#signin-submit")
        page.wait_for_selector("#signin", state="hidden", timeout=5000)
        assert session_token(page) == fresh
        assert len(watched.sockets) == 1
        assert {"type": "auth", "token": fresh} in watched.sockets[0]["sent"]
        watched.live()

        # A refresh the server refuses keeps the connection and the old token.
        page.click("#token-change")
        page.fill("#signin-token", mint(900, secret=b"another secret, not the server's, 32+ bytes"))
        page.click("#signin-submit")
        page.wait_for_selector('#signin[data-reason="refresh-refused"]', timeout=5000)
        assert session_token(page) == fresh and len(watched.sockets) == 1
        watched.live()
        page.click("#signin-cancel")

        # Sign out: the token is forgotten and the form is back.
        page.click("#signout")
        page.wait_for_selector('#signin[data-reason="signed-out"]', timeout=5000)
        assert session_token(page) is None
        page.wait_for_selector('#conn[data-state="signed-out"]', state="attached", timeout=5000)

        # Signing in through the form connects again (the token pasted, not in any URL).
        page.fill("#signin-token", fresh)
        page.click("#signin-submit")
        watched.live()
        assert all(fresh not in s["url"] and token not in s["url"] for s in watched.sockets)
        assert token not in page.url and fresh not in page.url
    finally:
        server.stop()
    log = server.output()
    # The access log is there (upgraded WebSockets never finish as HTTP requests, so only the rest shows).
    assert '"GET / HTTP/1.1" 200' in log and '"GET /client-limits.json HTTP/1.1" 200' in log
    assert token not in log and fresh not in log
    assert "Traceback" not in log


def test_an_expired_or_refused_token_says_so_and_asks_again(workdir: Path, watched: Watched) -> None:
    server = start_guarded(workdir)
    page = watched.page
    try:
        # Expires while live: the server closes with 4001 and the page says the token expired.
        page.goto(server.url + "#token=" + mint(3))
        watched.live()
        page.wait_for_selector('#signin[data-reason="expired"]', timeout=15000)
        assert "expired" in page.inner_text("#signin-note")
        assert session_token(page) is None
        page.wait_for_selector('#conn[data-state="signed-out"]', state="attached", timeout=5000)
        opened = len(watched.sockets)
        time.sleep(1.5)
        assert len(watched.sockets) == opened  # no retries with a token the server will not take

        # A token the server does not accept (signed with another secret) is refused at the handshake.
        refused = mint(600, secret=b"another secret, not the server's, 32+ bytes")
        page.fill("#signin-token", refused)
        page.click("#signin-submit")
        page.wait_for_selector('#signin[data-reason="refused"]', timeout=15000)
        assert "refused" in page.inner_text("#signin-note")
        assert session_token(page) is None

        # Something that cannot be a token is turned away by the page itself.
        page.fill("#signin-token", "not a token")
        page.click("#signin-submit")
        page.wait_for_selector('#signin[data-reason="malformed"]', timeout=5000)
        assert refused not in page.url
    finally:
        server.stop()
    log = server.output()
    assert "Traceback" not in log and refused not in log


# -- who acknowledged, shelving ------------------------------------------------------


def listed_alarms(server: Server) -> dict[str, dict[str, Any]]:
    """The alarms in a new client's snapshot, by id."""
    probe = Probe(server.port)
    try:
        snapshot = probe.next(5)
        assert snapshot is not None
        return {a["id"]: a for a in snapshot.get("alarms", [])}
    finally:
        probe.close()


def test_an_acknowledgement_carries_a_comment_and_shows_who_and_when(workdir: Path, watched: Watched) -> None:
    (workdir / "plant.toml").write_text(ALARM_CONFIG)
    server = start_server(workdir, "--config", str(workdir / "plant.toml"))
    try:
        page = watched.page
        page.goto(server.url)
        watched.live()
        item = f'#alarm-list [data-alarm="{ALARM}"]'
        page.wait_for_selector(item, timeout=10000)
        page.fill(f"{item} input.alarm-comment", "valve checked on site")
        page.click(f"{item} button.ack")
        page.wait_for_selector(f'{item}[data-state="acknowledged"]', timeout=3000)
        sent = [m for s in watched.sockets for m in s["sent"] if m.get("type") == "ack"]
        assert sent == [{"type": "ack", "alarm": ALARM, "comment": "valve checked on site"}], sent
        by = page.text_content(f"{item} .alarm-by") or ""
        assert "by anonymous" in by and "valve checked on site" in by, by
        assert re.search(r"acknowledged \d\d:\d\d", by), by
        # The server keeps them: a new client's snapshot, and a new page, have them too.
        listed = listed_alarms(server)[ALARM]
        assert (listed["state"], listed.get("by"), listed.get("comment")) == (
            "acknowledged", "anonymous", "valve checked on site"), listed
        other = Watched(watched.context)
        other.page.goto(server.url)
        other.live()
        other.page.wait_for_selector(f'{item}[data-state="acknowledged"] .alarm-by', timeout=5000)
        assert (other.page.text_content(f"{item} .alarm-by") or "") == by
        assert not other.errors, other.errors
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_an_alarm_can_be_shelved_for_a_while_and_unshelved(workdir: Path, watched: Watched) -> None:
    """Without authentication everything is allowed, shelving included."""
    (workdir / "plant.toml").write_text(ALARM_CONFIG)
    server = start_server(workdir, "--config", str(workdir / "plant.toml"))
    try:
        page = watched.page
        page.goto(server.url)
        watched.live()
        item = f'#alarm-list [data-alarm="{ALARM}"]'
        page.wait_for_selector(item, timeout=10000)
        assert page.input_value(f"{item} select.shelve-minutes") == "15"
        page.fill(f"{item} input.alarm-comment", "sensor swap")
        before = time.time()
        page.click(f"{item} button.shelve")
        page.wait_for_selector(f'{item}[data-state="shelved"]', timeout=3000)
        sent = [m for s in watched.sockets for m in s["sent"] if m.get("type") in ("shelve", "unshelve")]
        assert sent == [{"type": "shelve", "alarm": ALARM, "minutes": 15, "comment": "sensor swap"}], sent
        assert page.text_content(f"{item} .alarm-state") == "Shelved"
        by = page.text_content(f"{item} .alarm-by") or ""
        until = page.evaluate(
            "ts => new Date(ts * 1000).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', hour12: false})",
            before + 15 * 60,
        )
        assert "shelved until" in by and "by anonymous" in by and "sensor swap" in by, by
        listed = listed_alarms(server)[ALARM]
        assert listed["state"] == "shelved" and abs(listed["shelved_until"] - (before + 900)) < 30, listed
        assert re.search(r"shelved until \d\d:\d\d", by) and until[:2] in by, (by, until)
        assert page.query_selector(f"{item} button.ack") is None
        assert page.query_selector(f"{item} button.shelve") is None

        page.click(f"{item} button.unshelve")
        page.wait_for_function(
            f"() => {{ const a = document.querySelector('{item}'); return a && a.dataset.state !== 'shelved'; }}",
            timeout=3000,
        )
        assert page.get_attribute(item, "data-state") == "active"
        assert page.query_selector(f"{item} button.ack") is not None
        assert page.query_selector(f"{item} button.shelve") is not None
        assert listed_alarms(server)[ALARM]["state"] == "active"
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_a_shelve_the_token_does_not_allow_is_said_next_to_the_alarm(workdir: Path, watched: Watched) -> None:
    (workdir / "plant.toml").write_text(ALARM_CONFIG)
    secret = workdir / "jwt-secret"
    secret.write_bytes(SECRET)
    server = start_server(workdir, "--config", str(workdir / "plant.toml"), "--auth-jwt-secret-file", str(secret))
    try:
        page = watched.page
        page.goto(server.url + "#token=" + mint(600))  # may read, no ack or shelve claim
        watched.live()
        item = f'#alarm-list [data-alarm="{ALARM}"]'
        page.wait_for_selector(item, timeout=10000)
        page.click(f"{item} button.shelve")
        page.wait_for_selector(f"{item} .alarm-note", timeout=3000)
        note = page.text_content(f"{item} .alarm-note") or ""
        assert "forbidden" in note and "Not allowed" in note, note
        assert page.get_attribute(item, "data-state") == "active"
        # Brief: the note goes away by itself, and the alarm can be tried again.
        page.wait_for_selector(f"{item} .alarm-note", state="detached", timeout=10000)
        assert not page.is_disabled(f"{item} button.shelve")
    finally:
        server.stop()
    assert "Traceback" not in server.output()


# -- the trend range: 15 minutes live, 24 hours and 7 days from the store -----------------------


def test_the_24_hour_range_reads_the_store_and_draws_it(workdir: Path, watched: Watched) -> None:
    """twistd's default store is SQLite in its working folder: /api/history has what it recorded."""
    server = start_server(workdir, "--sim-units", "1", "--sim-seed", "5")
    try:
        page = watched.page
        page.goto(server.url)
        watched.live()
        page.wait_for_selector('html[data-history-api="true"]', state="attached", timeout=10000)
        assert page.get_attribute("html", "data-range") == "15m"
        assert page.get_attribute('#range button[data-range="15m"]', "aria-pressed") == "true"
        time.sleep(2.0)  # a few seconds in the store
        page.click('#range button[data-range="24h"]')
        page.wait_for_selector('html[data-range-state="loaded"]', state="attached", timeout=10000)
        assert page.get_attribute('#range button[data-range="24h"]', "aria-pressed") == "true"
        asked = [url for url in watched.requests if "/api/history?" in url and "step=300" in url]
        assert asked, watched.requests
        assert POINT in urllib.parse.unquote(asked[0]) and "from=" in asked[0]
        assert int(page.get_attribute("html", "data-range-samples") or 0) > 0
        # The large chart of a point draws the stored range: its stats count the samples.
        page.click(f'.card {ROW}')
        page.wait_for_function(
            "() => / (\\d+) samples/.test(document.getElementById('detail-stats').textContent)", timeout=5000
        )
        stats = page.text_content("#detail-stats") or ""
        assert int(re.search(r"(\d+) samples", stats).group(1)) > 0, stats  # type: ignore[union-attr]
        drawn = page.evaluate(
            """() => { const c = document.getElementById('detail-chart');
                       const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                       let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
        )
        assert drawn > 0
        # Back to 15 minutes: the live window again.
        page.keyboard.press("Escape")
        page.click('#range button[data-range="15m"]')
        assert page.get_attribute("html", "data-range") == "15m"
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_without_a_store_the_longer_ranges_are_disabled_and_say_why(workdir: Path, watched: Watched) -> None:
    server = start_server(workdir, "--sim-units", "1", "--sim-seed", "5", "--store", "memory")
    try:
        page = watched.page
        page.goto(server.url)
        watched.live()
        page.wait_for_selector('html[data-history-api="false"]', state="attached", timeout=10000)
        for key in ("24h", "7d"):
            button = f'#range button[data-range="{key}"]'
            assert page.is_disabled(button)
            assert "keeps no history" in (page.get_attribute(button, "title") or "")
        assert not page.is_disabled('#range button[data-range="15m"]')
        assert page.get_attribute("html", "data-range") == "15m"
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    # Chromium reports the 404 of the probe on the console; nothing else may be there.
    watched.errors[:] = [e for e in watched.errors if not e.startswith("console: Failed to load resource")]
