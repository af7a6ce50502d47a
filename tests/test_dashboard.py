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
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest

from hvac_push.testing import TEXT, decode_frame, json_object, upgrade_request
from hvac_push.transport.web import STATIC_DIR
from tests.wsprobe import bound_ports, closed_port, first_start  # noqa: F401 (fixture)

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
WALL = {"width": 1400, "height": 900}
POINT = "plant/chiller-1/supply_temp"
ROW = f'[data-point="{POINT}"]'
#: The deep link of chiller-1's unit page, whose rows the tests read.
UNIT = "#/unit/plant/chiller-1"


def without_id(message: dict[str, Any]) -> dict[str, Any]:
    """A message the page sent, less the request C{id} the client adds to match the answer."""
    return {k: v for k, v in message.items() if k != "id"}


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
        """Start twistd on C{self.port}, or (0) on a port the kernel picks, read back from its --port-file."""
        log = self.workdir / f"twistd-{id(self)}-{len(self.logs)}.log"
        port_file = self.workdir / f"twistd-{id(self)}.ports"
        port_file.unlink(missing_ok=True)
        self.logs.append(log)
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "hvacpush", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                 "--port-file", str(port_file), *self.args],
                cwd=self.workdir, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=out, stderr=subprocess.STDOUT,
            )
        process = self.process
        try:
            # 60 s: a bound, not a speed claim (a loaded machine starts twistd slowly).
            [self.port] = bound_ports(port_file, alive=lambda: process.poll() is None, timeout=60)
        except (RuntimeError, TimeoutError):  # an AssertionError: first_start looks for "already in use" in it
            self.stop()
            raise AssertionError(f"twistd did not listen (exit code {process.returncode}):\n{self.output()}") from None
        deadline = time.monotonic() + 60
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


def start_server(workdir: Path, *args: str, port: int = 0) -> Server:
    """A server on C{port}, or (0) on a port the kernel picks."""
    return Server(workdir, port, *args).start()


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
    """As the page shows it: JavaScript's toFixed(1) rounds an exact tie (6.25) up, Python's format to even."""
    return str(Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


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


def test_the_overview_has_a_tile_per_unit_and_the_unit_page_every_point_and_nothing_comes_from_elsewhere(
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
    page.wait_for_selector('#overview[data-units="6"]', state="attached", timeout=10000)
    units = page.eval_on_selector_all(".tile", "tiles => tiles.map(t => t.dataset.unit)")
    assert sorted(units) == sorted(f"plant/{u}" for u in ("chiller-1", "crac-1", "ahu-1", "chiller-2", "crac-2", "ahu-2"))
    kinds = page.eval_on_selector_all(".kind-section", "s => s.map(x => x.dataset.kind)")
    assert kinds == ["chiller", "crac", "ahu"]
    # A tile says whether the unit runs and how its points are, in words, with its key values.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.tile-val .num')].every(n => n.textContent !== '\\u2014')", timeout=5000
    )
    tile = page.eval_on_selector(
        '.tile[data-unit="plant/chiller-1"]',
        "t => [t.querySelector('.tile-run').textContent, t.querySelector('.tile-status').textContent,"
        " [...t.querySelectorAll('.tile-val')].map(v => v.textContent)]",
    )
    assert tile[0] in ("\u25b6 Running", "\u25a0 Stopped") and "all ok" in tile[1], tile
    assert tile[2][0].startswith("CHW supply ") and tile[2][0].endswith("°C") and tile[2][1].endswith("kW"), tile
    assert "6 units" in page.text_content("#summary")

    # The unit page: every point of the unit, each measured point a row with its value and unit.
    page.click('.tile[data-unit="plant/chiller-1"]')
    page.wait_for_selector(f".card {ROW}", timeout=5000)
    assert page.evaluate("location.hash") == UNIT
    on_page = set(page.eval_on_selector_all(".card [data-point]", "els => els.map(e => e.dataset.point)"))
    mine = {p for p in snapshot["points"] if p.startswith("plant/chiller-1/")}
    assert mine == on_page, mine ^ on_page
    rows = page.eval_on_selector_all(
        ".card .pt",
        "rows => rows.map(r => [r.closest('.card').dataset.unit, r.dataset.point, r.dataset.status,"
        " r.querySelector('.num').textContent, r.querySelector('.uom').textContent, !!r.querySelector('canvas.spark')])",
    )
    assert len(rows) == 7
    for unit_key, point_id, status, number, unit, sparkline in rows:
        assert unit_key == "plant/chiller-1" and status == "ok" and number.strip() and sparkline, point_id
        if point_id.endswith("_temp") or point_id.endswith("setpoint"):
            assert unit == "°C"
        if point_id.endswith("/compressor"):
            assert number in ("ON", "OFF")
    origin = plant.url
    assert all(url.startswith(origin) or url.startswith("data:") for url in watched.requests), watched.requests
    assert {s["url"].split("?")[0] for s in watched.sockets} == {f"ws://127.0.0.1:{plant.port}/ws"}


def test_each_published_value_reaches_the_page_as_published(plant: Server, watched: Watched) -> None:
    """Liveness and fidelity, not speed: the page follows the server's versions and shows their exact values.

    The deadline only stops a hung page from hanging the suite; how fast the
    page follows is measured by benchmarks/dashboard_500.py, not asserted here.
    """
    page = watched.page
    page.goto(plant.url + UNIT)
    page.wait_for_selector(ROW)
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
            version = message["points"][POINT]["version"]
            # ... and the page comes to show it (or something newer).
            deadline = time.monotonic() + 30
            while True:
                shown_version, value, number, unit = watched.row()
                if shown_version >= version:
                    break
                assert time.monotonic() < deadline, f"page stuck at v{shown_version}, server published v{version}"
                page.wait_for_timeout(10)
            while shown_version not in probe.seen[POINT]:
                assert probe.next(2) is not None
            assert value == probe.seen[POINT][shown_version]
            assert (number, unit) == (shown(value), "°C")
    finally:
        probe.close()


def test_fahrenheit_is_a_toggle_that_sticks(plant: Server, watched: Watched) -> None:
    page = watched.page
    page.goto(plant.url + UNIT)
    page.wait_for_selector(ROW)
    watched.live()
    page.click("#temp-f")
    _, celsius, number, unit = watched.row()
    assert unit == "°F" and abs(float(number) - (celsius * 9 / 5 + 32)) <= 0.051
    _, kw, number, unit = watched.row("plant/chiller-1/power")
    assert unit == "kW" and number == shown(kw)  # only temperatures change
    page.reload()
    watched.live()
    page.wait_for_selector(ROW)
    assert page.get_attribute("#temp-f", "aria-pressed") == "true"
    assert watched.row()[3] == "°F"
    page.click("#temp-c")
    assert watched.row()[3] == "°C"


def test_after_a_server_restart_the_page_reconnects_by_itself_and_shows_the_new_server(
    workdir: Path, watched: Watched
) -> None:
    # Restarted on its port below: one below the ephemeral range, moved only on a clash at the first start.
    first = first_start(lambda port: start_server(workdir, "--sim-units", "3", "--sim-seed", "1", port=port))
    port = first.port
    second: Server | None = None
    try:
        page = watched.page
        page.goto(first.url + UNIT)
        watched.live()
        page.wait_for_selector(ROW)
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
    # A request the page had in flight when the server was killed (history, plant.json) fails: Chromium
    # reports it on the console. Nothing else may be there.
    watched.errors[:] = [
        e for e in watched.errors
        if not e.startswith(("console: Failed to load resource: net::ERR_CONNECTION_RESET",
                             "console: Failed to load resource: net::ERR_CONNECTION_REFUSED"))
    ]


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
        page.goto(f"http://127.0.0.1:{proxy.port}/" + UNIT)
        page.wait_for_selector(ROW)
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
        assert page.eval_on_selector_all(".card .pt", "c => c.length") == 7
        probe = Probe(plant.port)
        try:
            probe.next(5)
            matches_probe(watched, probe)
        finally:
            probe.close()
    finally:
        proxy.close()


def test_the_unit_page_fills_its_charts_and_fits_a_control_room_screen_and_a_phone(
    plant: Server, watched: Watched, browser: Any
) -> None:
    """test-artifacts/dashboard-unit.png and dashboard-unit-phone.png, for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = watched.page
    page.set_viewport_size(WALL)
    page.goto(plant.url + UNIT)
    watched.live()
    page.wait_for_selector(ROW)
    # Every chart is filled from the server's history (paced under its rate limit)...
    page.wait_for_selector('body[data-history-pending="0"]', state="attached", timeout=10000)
    filled = page.eval_on_selector_all(".pt canvas.spark", "cs => cs.filter(c => c.width > 0).length")
    assert filled == 7
    # ... the large trend of the supply temperature has its setpoint and both alarm limits drawn...
    page.wait_for_function(
        "() => (document.querySelector('.trend-chart')?.dataset.lines || '').split(',').length === 3", timeout=5000
    )
    lines = page.eval_on_selector(".trend-chart", "c => c.dataset.lines")
    assert "limit:9.0" in lines or "limit:9" in lines, lines
    assert "limit:4" in lines and "setpoint:" in lines, lines
    # ... and the chiller's own group: supply, return, delta T and kW per ton side by side.
    group = page.text_content("#unit-groups") or ""
    assert all(word in group for word in ("Supply", "Return", "\u0394T", "kW per ton")), group
    page.wait_for_timeout(300)  # drawn on the next frame
    assert page.evaluate("document.documentElement.scrollWidth") <= WALL["width"]
    page.screenshot(path=str(ARTIFACTS / "dashboard-unit.png"), full_page=True)
    phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        small = Watched(phone)
        small.page.goto(plant.url + UNIT)
        small.live()
        small.page.wait_for_selector('body[data-history-pending="0"]', state="attached", timeout=10000)
        small.page.wait_for_timeout(300)
        width = small.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the phone layout scrolls sideways ({width}px)"
        small.page.screenshot(path=str(ARTIFACTS / "dashboard-unit-phone.png"))
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
        # On the overview: the unit's tile says it is in alarm, in words, and sorts first; the list has it.
        tile = '.tile[data-unit="plant/chiller-1"]'
        page.wait_for_selector(f'{tile}[data-alarm="critical"]', timeout=10000)
        assert (page.text_content(f"{tile} .tile-alarm") or "").endswith("1 alarm \u00b7 CRITICAL")
        assert page.eval_on_selector('.kind-section[data-kind="chiller"] .tile', "t => t.dataset.unit") == "plant/chiller-1"
        page.wait_for_selector(item, timeout=10000)
        since = page.text_content(f"{item} .alarm-info") or ""
        # ... and from its unit page (a click on the tile), where it can be acknowledged.
        page.click(tile)
        page.wait_for_selector(f".card {ROW}", timeout=5000)
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
        # The alarm's "since" is still when it started, not when it was acknowledged.
        started = re.search(r"since (\d\d:\d\d:\d\d)", since)
        assert started and started.group(0) in (page.text_content(f"{item} .alarm-info") or ""), since
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


def test_a_dead_device_looks_down_and_the_badge_does_not_say_live(
    workdir: Path, watched: Watched, closed_port: int
) -> None:
    """A plant file whose Modbus device is unreachable: its points are shown down, not fine (issue: honest state)."""
    dead = closed_port  # nothing listens here
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
        page.goto(server.url + UNIT)
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


def test_plant_json_summarises_each_unit_for_what_the_token_may_read() -> None:
    """The overview's source: kind, point names and counts by status per unit, only points the grant reads."""
    from twisted.internet.task import Clock

    from hvac_push.core.hub import Hub
    from hvac_push.core.points import Pattern, Sample
    from hvac_push.transport.auth import Permissions
    from hvac_push.transport.fanout import PushServerFactory
    from hvac_push.transport.plant_summary import plant_summary

    hub = Hub()
    hub.publish_many([
        Sample("plant/chiller-1/supply_temp", 7.0, "°C", 1.0),
        Sample("plant/chiller-1/power", 50.0, "kW", 1.0, "stale"),
        Sample("plant/ahu-2/supply_temp", 14.0, "°C", 1.0, "down"),
        Sample("other/crac-1/supply_temp", 19.0, "°C", 1.0),
    ])
    factory = PushServerFactory(hub, Clock())
    whole = plant_summary(factory)
    units = {f"{u['site']}/{u['unit']}": u for u in whole["units"]}
    assert sorted(units) == ["other/crac-1", "plant/ahu-2", "plant/chiller-1"]
    chiller = units["plant/chiller-1"]
    assert chiller["kind"] == "chiller" and sorted(chiller["points"]) == ["power", "supply_temp"]
    assert chiller["status"] == {"ok": 1, "stale": 1} and chiller["alarms"] == 0
    assert units["plant/ahu-2"]["kind"] == "ahu" and units["plant/ahu-2"]["status"] == {"down": 1}
    assert whole["points"] == {"ok": 2, "stale": 1, "down": 1} and whole["alarm_list"] == []
    narrow = plant_summary(factory, Permissions((Pattern.parse("plant/chiller-1/#"),)))
    assert [u["unit"] for u in narrow["units"]] == ["chiller-1"] and narrow["points"] == {"ok": 1, "stale": 1}


def test_the_page_paces_its_requests_by_the_limits_the_server_serves(limited: Server, watched: Watched) -> None:
    page = watched.page
    page.goto(limited.url + UNIT)
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
    page.goto(plant.url + UNIT)
    watched.live()
    loaded = page.evaluate("({...document.documentElement.dataset})")
    assert loaded["terms"] == "fallback", loaded
    assert (float(loaded["clientRate"]), int(loaded["clientBurst"])) == (20.0, 40)
    assert (float(loaded["sendRate"]), int(loaded["sendBurst"])) == (18.0, 20)
    page.wait_for_selector('body[data-history-pending="0"]', state="attached", timeout=10000)
    assert page.eval_on_selector_all(".card .pt", "c => c.length") == 7
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
        assert page.is_visible("#signin-token") and not page.is_visible(".tile")
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
        page.wait_for_selector('.tile[data-unit="plant/chiller-1"]', timeout=10000)
        page.click('.tile[data-unit="plant/chiller-1"]')
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
        assert {"type": "auth", "token": fresh} in [without_id(m) for m in watched.sockets[0]["sent"]]
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


def test_a_token_granted_one_unit_sees_only_that_unit_on_the_overview_live(workdir: Path, watched: Watched) -> None:
    secret = workdir / "jwt-secret"
    secret.write_bytes(SECRET)
    server = start_server(workdir, "--sim-units", "3", "--sim-seed", "5", "--auth-jwt-secret-file", str(secret))
    try:
        page = watched.page
        page.goto(server.url + "#token=" + mint(600, ["plant/chiller-1/#"]))
        page.wait_for_selector('#overview[data-units="1"]', state="attached", timeout=10000)
        assert page.eval_on_selector_all(".tile", "t => t.map(x => x.dataset.unit)") == ["plant/chiller-1"]
        page.wait_for_function(
            "() => [...document.querySelectorAll('.tile-val .num')].every(n => n.textContent !== '\u2014')", timeout=10000
        )
        # Subscribed to the tile's points one by one: within the grant, so nothing was refused.
        subscribed = [p for s in watched.sockets for m in s["sent"] if m.get("type") == "subscribe" for p in m["points"]]
        handshake = urllib.parse.unquote(watched.sockets[0]["url"].partition("points=")[2].partition("&")[0])
        assert sorted(handshake.split(",") + subscribed) == [
            "plant/chiller-1/compressor", "plant/chiller-1/power", "plant/chiller-1/supply_temp"]
        assert all(s["errors"] == [] for s in watched.sockets)
    finally:
        server.stop()
    assert "Traceback" not in server.output()


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
        page.goto(server.url + UNIT)
        watched.live()
        item = f'#alarm-list [data-alarm="{ALARM}"]'
        page.wait_for_selector(item, timeout=10000)
        page.fill(f"{item} input.alarm-comment", "valve checked on site")
        page.click(f"{item} button.ack")
        page.wait_for_selector(f'{item}[data-state="acknowledged"]', timeout=3000)
        sent = [without_id(m) for s in watched.sockets for m in s["sent"] if m.get("type") == "ack"]
        assert sent == [{"type": "ack", "alarm": ALARM, "comment": "valve checked on site"}], sent
        by = page.text_content(f"{item} .alarm-by") or ""
        assert "by anonymous" in by and "valve checked on site" in by, by
        assert re.search(r"acknowledged \d\d:\d\d", by), by
        # The server keeps them: a new client's snapshot, and a new page, have them too.
        listed = listed_alarms(server)[ALARM]
        assert (listed["state"], listed.get("by"), listed.get("comment")) == (
            "acknowledged", "anonymous", "valve checked on site"), listed
        other = Watched(watched.context)
        other.page.goto(server.url + UNIT)
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
        page.goto(server.url + UNIT)
        watched.live()
        item = f'#alarm-list [data-alarm="{ALARM}"]'
        page.wait_for_selector(item, timeout=10000)
        assert page.input_value(f"{item} select.shelve-minutes") == "15"
        page.fill(f"{item} input.alarm-comment", "sensor swap")
        before = time.time()
        page.click(f"{item} button.shelve")
        page.wait_for_selector(f'{item}[data-state="shelved"]', timeout=3000)
        sent = [without_id(m) for s in watched.sockets for m in s["sent"] if m.get("type") in ("shelve", "unshelve")]
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
        page.wait_for_selector(".tile", timeout=10000)
        page.evaluate("location.hash = '/unit/plant/chiller-1'")
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
        page.goto(server.url + UNIT)
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
        page.goto(server.url + UNIT)
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


# -- a plant of 500 units: overview, subscriptions, memory, search, deep links ---------------------

BIG_UNITS = 500
BIG_CONFIG = f"""\
[simulator]
units = {BIG_UNITS}
rate = 200
seed = 7

# One chiller far from its load limit: a critical alarm as soon as data flows.
[units.chiller-7]
source = "simulator"

[units.chiller-7.points.load]
unit = "kW"
alarm = {{ low = 100000.0, severity = "critical" }}
"""
#: Each tile shows the running flag and two values: the points the overview subscribes to.
TILE_POINTS = 3
#: The JS heap (after a garbage collection) the overview of 500 units must stay under, in bytes.
HEAP_BOUND = 32 * 1024 * 1024
AXE = ROOT / ".npm-tools" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("big")
    (workdir / "plant.toml").write_text(BIG_CONFIG)
    server = start_server(workdir, "--config", str(workdir / "plant.toml"), "--store", "memory")
    yield server
    server.stop()
    assert "Traceback" not in server.output()


def subscribed_points(server: Server) -> tuple[int, int]:
    """(hvacpush_subscribed_points, hvacpush_clients) from the server's /metrics."""
    with urllib.request.urlopen(server.url + "metrics", timeout=5) as response:
        text = response.read().decode("utf-8")
    values = dict(re.findall(r"^(hvacpush_subscribed_points|hvacpush_clients) (\S+)$", text, re.M))
    return int(float(values["hvacpush_subscribed_points"])), int(float(values["hvacpush_clients"]))


def wait_subscribed(server: Server, expected: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := subscribed_points(server)) != (expected, 1):
        assert time.monotonic() < deadline, f"the server counts {seen} (points, clients), expected ({expected}, 1)"
        time.sleep(0.1)


def save_figures(**figures: float) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "dashboard-500.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**known, **figures}, indent=2) + "\n")


def test_a_500_unit_overview_shows_every_unit_alarms_first_and_subscribes_only_to_its_tiles(
    big: Server, browser: Any
) -> None:
    context = browser.new_context(viewport=WALL)
    watched = Watched(context)
    try:
        page = watched.page
        started = time.monotonic()
        page.goto(big.url)
        page.wait_for_selector(f'#overview[data-units="{BIG_UNITS}"]', state="attached", timeout=20000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.tile-val .num')].every(n => n.textContent !== '\\u2014')",
            timeout=20000,
        )
        render_s = time.monotonic() - started
        in_page_ms = page.evaluate("performance.now()")
        save_figures(overview_render_s=round(render_s, 2), overview_render_in_page_ms=round(in_page_ms))
        assert render_s < 20, render_s  # generous: the figure itself goes to docs/dashboard.md
        assert page.eval_on_selector_all(".tile", "t => t.length") == BIG_UNITS
        # Units in alarm first in every kind; the critical chiller before every other chiller.
        for order in page.eval_on_selector_all(
            ".kind-section", "ss => ss.map(s => [...s.querySelectorAll('.tile')].map(t => !!t.dataset.alarm))"
        ):
            assert order == sorted(order, reverse=True), order
        page.wait_for_selector('.tile[data-unit="plant/chiller-7"][data-alarm="critical"]', timeout=10000)
        assert page.eval_on_selector('.kind-section[data-kind="chiller"] .tile', "t => t.dataset.unit") == "plant/chiller-7"
        # Three or more columns of tiles at 1400 px; nothing scrolls sideways.
        columns = page.eval_on_selector(".tiles", "g => getComputedStyle(g).gridTemplateColumns.split(' ').length")
        assert columns >= 3 and page.evaluate("document.documentElement.scrollWidth") <= WALL["width"]
        header = page.text_content("#summary") or ""
        assert f"{BIG_UNITS} units" in header and f"{BIG_UNITS * 7} points" in header, header

        # The server delivers to this page only the points its tiles show.
        shown = page.evaluate(
            "document.querySelectorAll('[data-tile-point]').length + document.querySelectorAll('.tile-run[data-on]').length"
        )
        assert shown == BIG_UNITS * TILE_POINTS
        wait_subscribed(big, shown)
        page.screenshot(path=str(ARTIFACTS / "overview-500.png"))

        # Memory: the JS heap after a garbage collection, some seconds in (the one-minute figure is in the docs).
        page.wait_for_timeout(20000)
        cdp = context.new_cdp_session(page)
        cdp.send("HeapProfiler.collectGarbage")
        heap = cdp.send("Runtime.getHeapUsage")["usedSize"]
        save_figures(heap_after_20s_mb=round(heap / 2**20, 1))
        assert heap < HEAP_BOUND, f"{heap / 2**20:.1f} MB"
        assert not watched.errors, watched.errors
    finally:
        context.close()


def test_search_finds_a_unit_its_link_opens_its_page_subscribed_to_it_alone_and_back_returns(
    big: Server, browser: Any
) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    watched = Watched(context)
    try:
        page = watched.page
        page.goto(big.url)
        page.wait_for_selector(f'#overview[data-units="{BIG_UNITS}"]', state="attached", timeout=20000)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=str(ARTIFACTS / "overview-phone.png"))
        page.fill("#search", "crac-42")
        page.wait_for_selector('#search-results a[href="#/unit/plant/crac-42"]', timeout=5000)
        page.press("#search", "Enter")
        page.wait_for_selector('.card [data-point="plant/crac-42/supply_temp"] .num', timeout=10000)
        assert page.evaluate("location.hash") == "#/unit/plant/crac-42"
        # The three points the tile had show at once; the rest come with the answer to the subscription.
        page.wait_for_function("() => document.querySelectorAll('.card [data-point]').length === 7", timeout=10000)
        rows = page.eval_on_selector_all(".card [data-point]", "r => r.map(x => x.dataset.point)")
        assert len(rows) == 7 and all(r.startswith("plant/crac-42/") for r in rows), rows
        wait_subscribed(big, 7)  # the overview's subscriptions are gone
        # A point name finds points, too.
        page.fill("#search", "return")
        page.wait_for_selector('#search-results a[href$="/return_temp"]', timeout=5000)
        page.fill("#search", "")

        page.go_back()
        page.wait_for_selector('.tile[data-unit="plant/crac-42"]', timeout=10000)
        assert page.evaluate("location.hash") == ""
        assert page.is_hidden("#unit-page")
        wait_subscribed(big, BIG_UNITS * TILE_POINTS)

        # A link sent to someone opens the unit's page directly.
        other = Watched(context)
        other.page.goto(big.url + "#/unit/plant/ahu-100")
        other.page.wait_for_selector('.card [data-point="plant/ahu-100/supply_temp"]', timeout=10000)
        assert other.page.text_content("#unit-title") == "ahu-100"
        other.page.close()
        # This server keeps no store: Chromium reports the 404 of the page's /api/history probe, nothing else.
        errors = [e for e in watched.errors + other.errors if not e.startswith("console: Failed to load resource: the server responded with a status of 404")]
        assert not errors, errors
    finally:
        context.close()


def axe_serious(page: Any) -> list[str]:
    """axe-core's violations of impact serious or critical on the page as it is."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
             .filter(v => v.impact === 'serious' || v.impact === 'critical')
             .map(v => v.id + ': ' + v.help + ' (' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ') + ')')"""
    )
    return list(found)


def test_axe_finds_no_serious_or_critical_violation_on_the_overview_or_a_unit_page(
    plant: Server, browser: Any
) -> None:
    if not AXE.is_file():
        subprocess.run(
            ["npm", "install", "--prefix", str(ROOT / ".npm-tools"), "--no-audit", "--no-fund", "axe-core@4"],
            check=True, capture_output=True, timeout=300,
        )
    # The page's CSP admits only its own scripts: axe is injected past it, for the test only.
    context = browser.new_context(viewport=WALL, bypass_csp=True)
    watched = Watched(context)
    try:
        page = watched.page
        page.goto(plant.url)
        page.wait_for_selector('#overview[data-units="6"]', state="attached", timeout=10000)
        page.wait_for_timeout(500)
        assert axe_serious(page) == []
        # Keyboard: Tab reaches the tiles, Enter opens one.
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.classList.contains('tile')"):
                break
        unit = page.evaluate("document.activeElement.dataset.unit")
        assert unit, "Tab never reached a tile"
        page.keyboard.press("Enter")
        page.wait_for_selector(f'.card[data-unit="{unit}"] .pt', timeout=10000)
        page.wait_for_selector('body[data-history-pending="0"]', state="attached", timeout=10000)
        assert axe_serious(page) == []
        assert not watched.errors, watched.errors
    finally:
        context.close()


def test_the_js_client_module_mirrors_subscribes_asks_and_resumes_on_a_bare_page(plant: Server, browser: Any) -> None:
    context = browser.new_context()
    watched = Watched(context)
    try:
        page = watched.page
        # A page of its own (static/examples/client.html), which imports only the client module.
        page.goto(plant.url + "static/examples/client.html?points=plant/chiller-1/%23")
        page.wait_for_function("() => window.client && window.client.state === 'live'", timeout=10000)
        page.wait_for_function("() => window.client.mirror.points.size > 0", timeout=5000)
        ids = page.evaluate("[...client.mirror.points.keys()]")
        assert ids and all(i.startswith("plant/chiller-1/") for i in ids), ids
        assert watched.sockets[0]["url"].endswith("/ws?points=plant/chiller-1/#".replace("#", "%23"))
        # Subscribe with a COV filter: the answer is the snapshot of what it added.
        added = page.evaluate(
            "client.subscribe(['plant/crac-1/supply_temp'], {deadband: 0.5}).then(m => Object.keys(m.points))"
        )
        assert added == ["plant/crac-1/supply_temp"]
        assert page.evaluate("client.mirror.points.has('plant/crac-1/supply_temp')")
        # History and ping are answered; an error answer rejects with its code.
        samples = page.evaluate("client.history('plant/chiller-1/supply_temp', Date.now() / 1000 - 60).then(m => m.samples.length)")
        assert samples > 0
        assert page.evaluate("client.ping().then(m => m.type)") == "pong"
        assert page.evaluate("client.ack('no-such-alarm').then(() => 'ok', e => e.code)") == "unknown_alarm"
        # Unsubscribe: those points leave the mirror.
        page.evaluate("client.unsubscribe(['plant/crac-1/supply_temp'])")
        assert not page.evaluate("client.mirror.points.has('plant/crac-1/supply_temp')")
        # The connection drops: the client reconnects by itself and resumes from its version.
        version = page.evaluate("client.mirror.version")
        page.evaluate("client.ws.close()")
        page.wait_for_function("() => window.client.state !== 'live'", timeout=5000)
        page.wait_for_function("() => window.client.state === 'live'", timeout=10000)
        resumed = watched.sockets[-1]
        assert "since=" in resumed["url"] and "epoch=" in resumed["url"], resumed["url"]
        assert resumed["frames"][0]["type"] == "update"
        assert page.evaluate("client.mirror.version") >= version
        page.evaluate("client.close()")
        assert page.evaluate("client.state") == "closed"
        assert not watched.errors, watched.errors
    finally:
        context.close()
