"""Benchmark runner: hvac-push against two baselines, over loopback, with a C load generator.

For each server it starts the server as a subprocess on a free 127.0.0.1 port,
waits until a WebSocket upgrade on /ws succeeds, runs ``loadgen`` (compiled
from ``benchmarks/loadgen.c`` with ``cc -O2`` into a temporary directory),
samples the server's CPU and RSS over the loadgen's measurement window, stops
the server (SIGTERM, then SIGKILL after a bound) and prints a markdown table.

Examples::

    .venv/bin/python benchmarks/run.py --quick                 # 50 clients, 5 s, smoke check
    .venv/bin/python benchmarks/run.py                         # 1000 clients x 100 updates/s
    .venv/bin/python benchmarks/run.py --all                   # 1000x100 and 5000x10
    .venv/bin/python benchmarks/run.py --scenario 5000x10 --servers hvacpush,websockets

Everything is bounded: each server gets at most READY_TIMEOUT_S to come up,
the loadgen exits by itself after warmup + duration (and is killed a few
seconds later if it does not), and each server is killed STOP_TIMEOUT_S after
SIGTERM. Raw results go to ``benchmarks/out/`` (git-ignored) as JSON.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

try:
    import psutil
except ImportError:  # pragma: no cover - the venv has it
    sys.exit("run.py needs psutil: use the project venv (.venv/bin/python benchmarks/run.py)")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT_DIR = HERE / "out"
HOST = "127.0.0.1"
WS_PATH = "/ws"

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
LOADGEN_GRACE_S = 15.0
SAMPLE_INTERVAL_S = 0.25
FD_SLACK = 1024

ALL_SERVERS = ("hvacpush", "websockets", "autobahn-naive")
#: Run only when named in --servers: --processes hvac-push processes on one port (benchmarks/cluster.py),
#: each with its own simulator, or (-mqtt) fed by a collector through a private mosquitto.
CLUSTER_SERVERS = ("hvacpush-reuseport", "hvacpush-reuseport-mqtt", "hvacpush-reuseport-nats")
#: ``hvacpush-coalesceN``: hvac-push with ``--coalesce-ms N``, so windows are compared in one interleaved run.
COALESCE_PREFIX = "hvacpush-coalesce"


def coalesce_ms(name: str) -> int | None:
    """The coalescing window a ``hvacpush-coalesceN`` server name asks for, else None."""
    rest = name.removeprefix(COALESCE_PREFIX)
    return int(rest) if rest != name and rest.isdigit() else None


def is_hvacpush(name: str) -> bool:
    """One twistd hvacpush process (plain or with a coalescing window)."""
    return name == "hvacpush" or coalesce_ms(name) is not None

#: Named scenarios; ``--all`` runs them in this order.
SCENARIOS = {
    "1000x100": {"clients": 1000, "rate": 100, "duration": 20.0, "warmup": 5.0},
    "5000x10": {"clients": 5000, "rate": 10, "duration": 20.0, "warmup": 10.0},
    # Issue 14, scenario 1: the connect time is the loadgen's ramp (first connect to last).
    "10000x10": {"clients": 10000, "rate": 10, "duration": 20.0, "warmup": 25.0},
    # Scenario 3: 7,143 simulated units = 50,001 points, 2,000 updates/s, 500 clients: even ones
    # on everything, odd ones on one unit each (plant/<unit>/#). Baselines have no subscriptions.
    "plant50k": {"clients": 500, "rate": 2000, "duration": 20.0, "warmup": 20.0, "sim_units": 7143,
                 "paths": "half-unit", "servers": ("hvacpush",), "ready_timeout": 90.0},
    # Scenario 4: 1,000 steady clients x 100 updates/s, without and with 200 clients/s connecting,
    # reading their snapshot and leaving (a "+churn" server runs the churn beside the steady load).
    "churn": {"clients": 1000, "rate": 100, "duration": 20.0, "warmup": 5.0, "churn_per_s": 200,
              "servers": ("hvacpush", "hvacpush+churn", "websockets", "websockets+churn")},
}
DEFAULT = {"clients": 1000, "rate": 100, "duration": 20.0, "warmup": 5.0}
QUICK = {"clients": 50, "rate": 100, "duration": 5.0, "warmup": 2.0}


# -- environment --------------------------------------------------------------

def venv_bin(name: str) -> str:
    """A console script next to the running interpreter (the project venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    return str(REPO / ".venv" / "bin" / name)


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    return (
        f"nproc={os.cpu_count()}, CPU: {cpu_model()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, Twisted {version_of('twisted')}, "
        f"Autobahn {version_of('autobahn')}, websockets {version_of('websockets')}, "
        f"psutil {version_of('psutil')}"
    )


def nofile_target(clients: int) -> int:
    return clients + FD_SLACK


def raise_nofile(target: int) -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE soft limit to C{target} (and hard, if allowed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < target:
        new_hard = hard
        if hard != resource.RLIM_INFINITY and hard < target:
            new_hard = target  # only root may do this; fall back below
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, new_hard))
        except (ValueError, OSError):
            if hard == resource.RLIM_INFINITY or hard > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def preexec_for(target: int):
    """preexec_fn for servers: their own RLIMIT_NOFILE soft limit, set in the child."""

    def preexec() -> None:
        try:
            raise_nofile(target)
        except Exception:
            pass

    return preexec


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def compile_loadgen(tmpdir: str) -> str:
    cc = os.environ.get("CC", "cc")
    exe = os.path.join(tmpdir, "loadgen")
    cmd = [cc, "-O2", "-o", exe, str(HERE / "loadgen.c")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        sys.exit(f"compiling the load generator failed:\n{shlex.join(cmd)}\n{result.stderr}")
    return exe


# -- servers ------------------------------------------------------------------

def server_command(name: str, port: int, rate: int, processes: int = 2, units: int = 6,
                   clients: int = 0) -> list[str]:
    if name in CLUSTER_SERVERS:
        return [sys.executable, str(HERE / "cluster.py"), "--port", str(port), "--rate", str(rate),
                "--units", "6", "--processes", str(processes), *(["--broker"] if name.endswith("-mqtt") else []),
                *(["--nats"] if name.endswith("-nats") else [])]
    if is_hvacpush(name):
        window = coalesce_ms(name)
        return [
            venv_bin("twistd"), "-n", "--pidfile=", "hvacpush",
            "--listen", f"tcp:{port}:interface={HOST}",
            "--sim-units", str(units), "--sim-rate", str(rate),
            # every load-generator client comes from 127.0.0.1, like clients behind a proxy
            "--max-connections-per-ip", "0",
            *(["--max-connections", str(clients + 1000)] if clients + 1000 > 10_000 else []),
            *(["--coalesce-ms", str(window)] if window else []),
        ]
    if name == "websockets":
        return [sys.executable, str(HERE / "baseline_websockets.py"),
                "--host", HOST, "--port", str(port), "--rate", str(rate), "--units", "6"]
    if name == "autobahn-naive":
        return [sys.executable, str(HERE / "baseline_autobahn_naive.py"),
                "--host", HOST, "--port", str(port), "--rate", str(rate), "--units", "6",
                "--poll-ms", "5"]
    raise ValueError(f"unknown server {name!r}")


def unavailable_reason(name: str) -> str | None:
    if is_hvacpush(name) and not (REPO / "hvac_push" / "ops" / "tap.py").exists():
        return "hvac_push/ops/tap.py does not exist yet"
    return None


def server_env(extra_paths: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    paths = [*extra_paths, str(REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def upgrade_ok(port: int, timeout: float = 2.0) -> bool:
    """One WebSocket upgrade on /ws: True when the server answers 101."""
    request = (
        f"GET {WS_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: cmVhZHktcHJvYmUtMDAwMQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(request)
            data = b""
            deadline = time.monotonic() + timeout
            while b"\r\n\r\n" not in data and time.monotonic() < deadline and len(data) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            ok = data.startswith(b"HTTP/1.1 101")
            if ok:  # polite close frame (masked, code 1000)
                try:
                    s.sendall(bytes([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2]))
                except OSError:
                    pass
            return ok
    except OSError:
        return False


def wait_ready(proc: subprocess.Popen, port: int, timeout: float = READY_TIMEOUT_S) -> str | None:
    """None when the server accepts WebSocket upgrades, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with code {proc.returncode} before accepting connections"
        if upgrade_ok(port):
            return None
        time.sleep(0.2)
    return f"did not accept a WebSocket upgrade on {WS_PATH} within {timeout:.0f}s"


def wait_log_line(proc: subprocess.Popen, log_path: Path, line: str, timeout: float = READY_TIMEOUT_S) -> str | None:
    """None once the server's log has C{line} (cluster.py says when every process is ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line in tail(log_path, 200):
            return None
        if proc.poll() is not None:
            return f"exited with code {proc.returncode} before {line!r}"
        time.sleep(0.2)
    return f"did not log {line!r} within {timeout:.0f}s"


def stop_server(proc: subprocess.Popen) -> str:
    if proc.poll() is not None:
        return f"had already exited ({proc.returncode})"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
        return f"stopped by SIGTERM ({proc.returncode})"
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return "killed (SIGKILL) after SIGTERM timeout"


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# -- churn: clients that connect, read their snapshot and leave ---------------

class Churn:
    """C{rate} connections per second, each: upgrade, read the first message (the snapshot), close.

    Forty threads share the rate (open loop: a slow server does not slow the churn much); each connection is bounded by CHURN_TIMEOUT_S.
    Runs between start() and stop() (the loadgen's measurement window).
    """

    THREADS = 40
    CHURN_TIMEOUT_S = 5.0

    def __init__(self, port: int, rate: float):
        self.port = port
        self.rate = rate
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.done = 0
        self.failed = 0
        self.seconds: list[float] = []
        self._started = 0.0
        self._elapsed = 0.0

    def start(self) -> None:
        if self._threads:
            return
        self._started = time.monotonic()
        for k in range(self.THREADS):
            t = threading.Thread(target=self._loop, args=(k,), daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.CHURN_TIMEOUT_S + 1)
        self._elapsed = time.monotonic() - self._started if self._started else 0.0

    def _loop(self, k: int) -> None:
        interval = self.THREADS / self.rate
        next_at = time.monotonic() + k * interval / self.THREADS
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            next_at += interval
            began = time.monotonic()
            ok = self._one()
            with self._lock:
                if ok:
                    self.done += 1
                    self.seconds.append(time.monotonic() - began)
                else:
                    self.failed += 1

    def _one(self) -> bool:
        request = (
            f"GET {WS_PATH} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: Y2h1cm4tY2xpZW50LTAwMQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        try:
            with socket.create_connection((HOST, self.port), timeout=self.CHURN_TIMEOUT_S) as sock:
                sock.sendall(request)
                data = b""
                deadline = time.monotonic() + self.CHURN_TIMEOUT_S
                while time.monotonic() < deadline and len(data) < 64 << 20:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return False
                    data += chunk
                    head, sep, rest = data.partition(b"\r\n\r\n")
                    if not sep:
                        continue
                    if not head.startswith(b"HTTP/1.1 101"):
                        return False
                    if _frame_complete(rest):
                        sock.sendall(bytes([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2]))
                        return True
                return False
        except OSError:
            return False

    def result(self) -> dict:
        seconds = sorted(self.seconds)
        p = (lambda q: round(1000 * seconds[min(len(seconds) - 1, int(q * len(seconds)))], 2)) if seconds else None
        return {"rate": self.rate, "done": self.done, "failed": self.failed,
                "per_s": round(self.done / self._elapsed, 1) if self._elapsed else None,
                "connect_to_snapshot_ms_p50": p(0.5) if p else None,
                "connect_to_snapshot_ms_p99": p(0.99) if p else None}


def _frame_complete(data: bytes) -> bool:
    """Whether C{data} starts with one whole unmasked server frame."""
    if len(data) < 2:
        return False
    n = data[1] & 0x7F
    offset = 2
    if n == 126:
        if len(data) < 4:
            return False
        n, offset = int.from_bytes(data[2:4], "big"), 4
    elif n == 127:
        if len(data) < 10:
            return False
        n, offset = int.from_bytes(data[2:10], "big"), 10
    return len(data) >= offset + n


# -- measurement --------------------------------------------------------------

class Sampler:
    """CPU time and RSS of a process tree, sampled over the loadgen's window."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.lock = threading.Lock()
        self.in_window = False
        self.cpu_start = self.cpu_end = None
        self.wall_start = self.wall_end = None
        self.sys_start = self.sys_end = None
        self.peak_rss = 0
        self.peak_rss_any = 0

    def _tree(self):
        procs = [self.proc]
        try:
            procs += self.proc.children(recursive=True)
        except psutil.Error:
            pass
        return procs

    def cpu(self) -> float:
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self._tree():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def mark_start(self) -> None:
        with self.lock:
            self.cpu_start, self.wall_start = self.cpu(), time.monotonic()
            self.sys_start = psutil.cpu_times()
            self.in_window = True

    def mark_end(self) -> None:
        with self.lock:
            if self.in_window:
                self.cpu_end, self.wall_end = self.cpu(), time.monotonic()
                self.sys_end = psutil.cpu_times()
                self.in_window = False

    def sample(self) -> None:
        r = self.rss()
        with self.lock:
            self.peak_rss_any = max(self.peak_rss_any, r)
            if self.in_window:
                self.peak_rss = max(self.peak_rss, r)

    def result(self) -> dict:
        out: dict = {"peak_rss_mb": round(self.peak_rss / 2**20, 1),
                     "peak_rss_any_mb": round(self.peak_rss_any / 2**20, 1)}
        if self.cpu_start is not None and self.cpu_end is not None:
            wall = max(self.wall_end - self.wall_start, 1e-9)
            out["server_cpu_s"] = round(self.cpu_end - self.cpu_start, 3)
            out["server_cpu_pct"] = round(100.0 * (self.cpu_end - self.cpu_start) / wall, 1)
            out["server_window_s"] = round(wall, 3)
            busy = _busy(self.sys_end) - _busy(self.sys_start)
            total = sum(self.sys_end) - sum(self.sys_start)
            out["machine_busy_pct"] = round(100.0 * busy / total, 1) if total > 0 else None
        return out


def _busy(t) -> float:
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def write_paths(cfg: dict, log_dir: Path) -> str | None:
    """The LOADGEN_PATHS file for a scenario with per-client paths, or None."""
    if cfg.get("paths") != "half-unit":
        return None
    sys.path.insert(0, str(REPO))
    from hvac_push.sources.simulator import PlantModel

    units = PlantModel(units=cfg.get("sim_units", 6), seed=0).unit_names
    lines = []
    for i in range(cfg["clients"]):
        lines.append(WS_PATH if i % 2 == 0 else f"{WS_PATH}?points=plant/{units[(i // 2) % len(units)]}/%23")
    path = log_dir / f"{cfg['name']}-paths.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def run_loadgen(loadgen: str, port: int, cfg: dict, sampler: Sampler, batch: int,
                inflight: int, paths: str | None = None, churn: "Churn | None" = None) -> dict:
    cmd = [loadgen, HOST, str(port), WS_PATH, str(cfg["clients"]), str(cfg["duration"]),
           str(cfg["warmup"]), str(batch), str(inflight)]
    env = dict(os.environ)
    if paths:
        env["LOADGEN_PATHS"] = paths
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=preexec_for(nofile_target(cfg["clients"])))
    stderr_lines: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip("\n")
            if line == "# measure start":
                sampler.mark_start()
                if churn is not None:
                    churn.start()
            elif line == "# measure end":
                sampler.mark_end()
                if churn is not None:
                    churn.stop()
            elif len(stderr_lines) < 200:
                stderr_lines.append(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout_chunks: list[str] = []

    def read_stdout() -> None:
        assert proc.stdout is not None
        stdout_chunks.append(proc.stdout.read())

    out_reader = threading.Thread(target=read_stdout, daemon=True)
    out_reader.start()

    deadline = time.monotonic() + cfg["warmup"] + cfg["duration"] + LOADGEN_GRACE_S
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            sampler.sample()
        except psutil.Error:
            pass
        time.sleep(SAMPLE_INTERVAL_S)
    killed = False
    if proc.poll() is None:
        proc.kill()
        killed = True
    proc.wait(timeout=10)
    out_reader.join(timeout=5)
    reader.join(timeout=5)
    sampler.mark_end()
    if churn is not None:
        churn.stop()
    text = "".join(stdout_chunks).strip().splitlines()
    if not text:
        raise RuntimeError("loadgen printed nothing" + (" (killed)" if killed else "")
                           + (": " + " | ".join(stderr_lines[-5:]) if stderr_lines else ""))
    result = json.loads(text[-1])
    result["loadgen_command"] = ("LOADGEN_PATHS=" + paths + " " if paths else "") + shlex.join(cmd)
    if churn is not None:
        result["churn"] = churn.result()
    if stderr_lines:
        result["loadgen_stderr"] = stderr_lines[-20:]
    return result


def run_one(name: str, cfg: dict, loadgen: str, log_dir: Path, args) -> dict:
    row = {"server": name, **cfg, "expected_updates_per_s": cfg["clients"] * cfg["rate"]}
    if cfg.get("paths") == "half-unit":
        # Half the clients get every update; the other half one unit's share (7 of 7 x units points).
        half = cfg["clients"] / 2
        row["expected_updates_per_s"] = round(half * cfg["rate"] + half * cfg["rate"] / cfg.get("sim_units", 6))
    label, name = name, name.removesuffix("+churn")
    row["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    churn_rate = cfg.get("churn_per_s", 0) if label.endswith("+churn") else 0
    reason = unavailable_reason(name)
    if reason:
        row["error"] = f"skipped: {reason}"
        return row
    port = free_port()
    cmd = server_command(name, port, cfg["rate"], getattr(args, "processes", 2),
                         cfg.get("sim_units", 6), cfg["clients"])
    row["server_command"] = shlex.join(cmd)
    earlier = len(list(log_dir.glob(f"{cfg['name']}-{label}-*.log")))  # one log per run, not per server
    log_path = log_dir / f"{cfg['name']}-{label}-{earlier + 1}.log"
    if is_hvacpush(name):
        # A fresh store per run: the default sqlite:hvac-push.db would restore the previous
        # run's points (a 50,000-point plant into the next 42-point scenario).
        cmd += ["--store", f"sqlite:{log_path.with_suffix('.db')}"]
        row["server_command"] = shlex.join(cmd)
    row["server_log"] = str(log_path)
    print(f"  {name}: starting on {HOST}:{port} ...", file=sys.stderr, flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd, cwd=str(REPO), env=server_env(args.pythonpath_prepend), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=preexec_for(nofile_target(cfg["clients"])),
        )
        try:
            problem = wait_ready(proc, port, cfg.get("ready_timeout", READY_TIMEOUT_S))
            if not problem and name in CLUSTER_SERVERS:
                # A NATS cluster forms and elects its JetStream leaders before the edges can sync.
                problem = wait_log_line(proc, log_path, "cluster: ready", 60.0 if name.endswith("-nats") else READY_TIMEOUT_S)
            if problem:
                row["error"] = f"server {problem}"
                row["server_log_tail"] = tail(log_path)
                return row
            sampler = Sampler(proc.pid)
            print(f"  {name}: ready; loadgen {cfg['clients']} clients, "
                  f"{cfg['warmup']:g}s warmup + {cfg['duration']:g}s", file=sys.stderr, flush=True)
            churn = Churn(port, churn_rate) if churn_rate else None
            try:
                lg = run_loadgen(loadgen, port, cfg, sampler, args.batch, args.inflight,
                                 write_paths(cfg, log_dir), churn)
            except (RuntimeError, ValueError) as exc:
                row["error"] = f"loadgen: {exc}"
                return row
            row["loadgen"] = lg
            row.update(sampler.result())
            if proc.poll() is not None:
                row["warning"] = f"server exited during the run ({proc.returncode})"
        finally:
            row["server_stop"] = stop_server(proc)
    if row.get("loadgen"):
        lg = row["loadgen"]
        row["delivered_updates_per_s"] = lg["updates_per_s"]
        row["delivered_pct"] = round(100.0 * lg["updates_per_s"] / row["expected_updates_per_s"], 1)
        row["loadgen_cpu_pct"] = round(100.0 * lg["loadgen_cpu_s"] / max(lg["window_s"], 1e-9), 1)
        notes = []
        if lg["clients_connected"] < cfg["clients"]:
            notes.append(f"only {lg['clients_connected']}/{cfg['clients']} clients connected")
        if lg["ramp_s"] > cfg["warmup"]:
            notes.append(f"ramp took {lg['ramp_s']:.1f}s > warmup {cfg['warmup']:g}s")
        if lg["clients_dropped"]:
            notes.append(f"{lg['clients_dropped']} clients dropped by the server")
        if notes:
            row["notes"] = notes
    return row


# -- reporting ----------------------------------------------------------------

def fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def median_rows(rows: list[dict]) -> list[dict]:
    """One row per server: its median-p99 run, with the median CPU and delivery of all its runs."""
    out = []
    for name in dict.fromkeys(r["server"] for r in rows):
        runs = [r for r in rows if r["server"] == name and "loadgen" in r]
        if not runs:
            out.append(next(r for r in rows if r["server"] == name))
            continue
        runs.sort(key=lambda r: r["loadgen"]["latency_ms"]["p99"])
        row = dict(runs[len(runs) // 2])
        for key in ("server_cpu_pct", "server_cpu_s", "delivered_updates_per_s", "delivered_pct",
                    "loadgen_cpu_pct"):
            values = sorted(r[key] for r in runs if r.get(key) is not None)
            if values:
                row[key] = values[len(values) // 2]
        out.append(row)
    return out


def table(rows: list[dict], label_rep: bool = False) -> str:
    head = ("| server | clients | rate | delivered updates/s | expected updates/s | delivered % "
            "| p50 (ms) | p99 (ms) | max (ms) | server CPU % | peak RSS MB | loadgen CPU % |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        name = f"{r['server']} #{r.get('rep', 1)}" if label_rep else r["server"]
        if "loadgen" not in r:
            lines.append(f"| {name} | {fmt(r['clients'])} | {fmt(r['rate'])} | "
                         f"{r.get('error', 'no result')} |" + " |" * 8)
            continue
        lat = r["loadgen"]["latency_ms"]
        lines.append(
            f"| {name} | {fmt(r['clients'])} | {fmt(r['rate'])} "
            f"| {fmt(r['delivered_updates_per_s'], 0)} | {fmt(r['expected_updates_per_s'])} "
            f"| {fmt(r['delivered_pct'])} | {fmt(lat['p50'], 2)} | {fmt(lat['p99'], 2)} "
            f"| {fmt(lat['max'], 2)} | {fmt(r.get('server_cpu_pct'))} | {fmt(r.get('peak_rss_mb'))} "
            f"| {fmt(r.get('loadgen_cpu_pct'))} |"
        )
    return "\n".join(lines)


def us_per_update(r: dict) -> float | None:
    lg = r.get("loadgen")
    if not lg or not lg.get("updates") or r.get("server_cpu_s") is None:
        return None
    return 1e6 * r["server_cpu_s"] / lg["updates"]


def ratio_lines(rows: list[dict]) -> list[str]:
    ours = next((r for r in rows if r["server"] == "hvacpush" and "loadgen" in r), None)
    if ours is None:
        return []
    out = []
    for base in rows:
        if base is ours or "loadgen" not in base:
            continue
        p99 = ours["loadgen"]["latency_ms"]["p99"] / max(base["loadgen"]["latency_ms"]["p99"], 1e-9)
        cpu_b = base.get("server_cpu_pct") or 0
        cpu = (ours.get("server_cpu_pct") or 0) / cpu_b if cpu_b else float("nan")
        upd_o, upd_b = us_per_update(ours), us_per_update(base)
        per = f"; server CPU per delivered update {upd_o:.1f} µs vs {upd_b:.1f} µs" \
            if upd_o and upd_b else ""
        out.append(f"- hvacpush vs {base['server']}: p99 ratio {p99:.2f}x, CPU ratio {cpu:.2f}x"
                   f" (hvacpush / baseline; below 1 is better){per}")
    return out


def detail_lines(rows: list[dict]) -> list[str]:
    """Secondary figures that explain the table (coalescing, fairness, ramp, load)."""
    out = []
    for r in rows:
        lg = r.get("loadgen")
        if not lg:
            continue
        frames_s = lg["frames"] / max(lg["window_s"], 1e-9)
        per_frame = lg["updates"] / lg["frames"] if lg["frames"] else 0.0
        upd = us_per_update(r)
        out.append(
            f"- {r['server']}: {frames_s:,.0f} frames/s ({per_frame:.2f} points/frame), "
            f"p99.9 {lg['latency_ms']['p999']:.2f} ms, per-client updates "
            f"{lg['per_client_updates_min']:,}-{lg['per_client_updates_max']:,}, "
            f"{lg['clients_connected']:,} connected in {lg['ramp_s']:.1f}s, "
            f"{lg['clients_failed']} failed, {lg['clients_dropped']} dropped, "
            f"server CPU {upd:.1f} µs/update, machine busy {r.get('machine_busy_pct')}%, "
            f"load average at start {r.get('loadavg_at_start')}"
            if upd is not None else f"- {r['server']}: {frames_s:,.0f} frames/s"
        )
        if lg.get("churn"):
            c = lg["churn"]
            out.append(f"  - churn: {c['done']} connect-snapshot-leave cycles ({c['per_s']}/s, asked {c['rate']}/s), "
                       f"{c['failed']} failed, connect to snapshot p50 {c['connect_to_snapshot_ms_p50']} ms, "
                       f"p99 {c['connect_to_snapshot_ms_p99']} ms")
    return out


def notes_lines(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        for n in r.get("notes", []):
            out.append(f"- {r['server']}: {n}")
        if r.get("warning"):
            out.append(f"- {r['server']}: {r['warning']}")
        if r.get("machine_busy_pct") is not None and r["machine_busy_pct"] > 90:
            out.append(f"- {r['server']}: the machine was {r['machine_busy_pct']:.0f}% busy "
                       "(all cores) during the window")
        if r.get("error") and r.get("server_log_tail"):
            out.append(f"- {r['server']}: server log tail:\n```\n{r['server_log_tail']}\n```")
    return out


# -- main ---------------------------------------------------------------------

def build_configs(args) -> list[dict]:
    overrides = {k: getattr(args, k) for k in ("clients", "rate", "duration", "warmup")
                 if getattr(args, k) is not None}
    if args.quick:
        if args.all or args.scenario:
            sys.exit("--quick is a scenario of its own; do not combine it with --all/--scenario")
        return [{"name": "quick", **QUICK, **overrides}]
    names = list(SCENARIOS) if args.all else (args.scenario.split(",") if args.scenario else [])
    if not names:
        cfg = {**DEFAULT, **overrides}
        return [{"name": f"{cfg['clients']}x{cfg['rate']}", **cfg}]
    configs = []
    for n in names:
        if n not in SCENARIOS:
            sys.exit(f"unknown scenario {n!r}; known: {', '.join(SCENARIOS)}")
        configs.append({"name": n, **SCENARIOS[n], **overrides})
    return configs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="hvac-push fan-out benchmark (loopback, C loadgen)")
    p.add_argument("--clients", type=int, help=f"WebSocket clients (default {DEFAULT['clients']})")
    p.add_argument("--rate", type=int, help=f"simulator updates/s (default {DEFAULT['rate']})")
    p.add_argument("--duration", type=float, help="measured seconds (default 20)")
    p.add_argument("--warmup", type=float, help="seconds before measuring (default 5)")
    p.add_argument("--servers", default=None,
                   help=f"comma list from {','.join(ALL_SERVERS)} (default: all, or the scenario's own list); "
                        "a '+churn' suffix adds the churn load; hvacpush-coalesceN runs --coalesce-ms N")
    p.add_argument("--scenario", help=f"comma list of named scenarios: {', '.join(SCENARIOS)}")
    p.add_argument("--all", action="store_true", help="run every named scenario")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke check: {QUICK['clients']} clients, {QUICK['duration']:g}s")
    p.add_argument("--batch", type=int, default=32, help="loadgen connects per 10 ms turn")
    p.add_argument("--inflight", type=int, default=32,
                   help="loadgen max pending handshakes (keep below the listen backlog, 50)")
    p.add_argument("--pythonpath-prepend", action="append", default=[], metavar="DIR",
                   help="extra import dir placed before the repo for the servers (development)")
    p.add_argument("--json", metavar="FILE", help="also write raw results here")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the server list this many times, interleaved, and compare medians "
                        "(a 2-core machine is noisy; default 1)")
    p.add_argument("--processes", type=int, default=2,
                   help=f"processes sharing the port for {', '.join(CLUSTER_SERVERS)} (default 2)")
    args = p.parse_args(argv)
    args.server_list = [s.strip() for s in (args.servers or ",".join(ALL_SERVERS)).split(",") if s.strip()]
    for s in args.server_list:
        if s.removesuffix("+churn") not in ALL_SERVERS + CLUSTER_SERVERS and coalesce_ms(s) is None:
            p.error(f"unknown server {s!r}; known: {', '.join(ALL_SERVERS + CLUSTER_SERVERS)}")
    for key, lo, hi in (("clients", 1, 20000), ("rate", 1, 10000), ("duration", 1, 600),
                        ("warmup", 0, 120)):
        v = getattr(args, key)
        if v is not None and not lo <= v <= hi:
            p.error(f"--{key} must be within [{lo}, {hi}]")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    configs = build_configs(args)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    max_clients = max(c["clients"] for c in configs)
    soft, hard = raise_nofile(nofile_target(max_clients))
    if soft < max_clients + 64:
        print(f"warning: RLIMIT_NOFILE is {soft}; {max_clients} clients may not fit",
              file=sys.stderr)

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = OUT_DIR / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_line()
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="hvac-loadgen-") as tmp:
        loadgen = compile_loadgen(tmp)
        for cfg in configs:
            print(f"scenario {cfg['name']}: {cfg['clients']} clients x {cfg['rate']} updates/s",
                  file=sys.stderr, flush=True)
            rows = []
            servers = args.server_list if args.servers else list(cfg.get("servers", args.server_list))
            for rep in range(max(1, min(args.repeat, 10))):
                for name in servers:
                    row = run_one(name, cfg, loadgen, log_dir, args)
                    row["rep"] = rep + 1
                    rows.append(row)
            results.append({"scenario": cfg, "rows": rows})

    elapsed = time.monotonic() - started
    print(f"\n## hvac-push fan-out benchmark ({stamp})\n")
    print(f"Machine: {machine}, RLIMIT_NOFILE {soft}")
    print(f"Command: `{command}` (cwd {os.getcwd()})")
    print("Load generator: benchmarks/loadgen.c (one C process, epoll, single thread, "
          f"`cc -O2`), clients on {HOST}; latency = receive time - point `ts`.")
    for block in results:
        cfg = block["scenario"]
        print(f"\n### {cfg['name']}: {cfg['clients']} clients x {cfg['rate']} updates/s, "
              f"{cfg['warmup']:g}s warmup + {cfg['duration']:g}s measured\n")
        rows = block["rows"]
        if args.repeat > 1:
            print("Every run, in the order they ran:\n")
            print(table(rows, label_rep=True))
            rows = median_rows(rows)
            print(f"\nMedians over {args.repeat} runs (p99 and max: the run with the median p99; "
                  "CPU: the median of the runs):\n")
        print(table(rows))
        extra = ratio_lines(rows) + detail_lines(rows) + notes_lines(rows)
        if extra:
            print()
            print("\n".join(extra))
    print(f"\nTotal time {elapsed:.0f}s. Raw results and server logs: {log_dir}")

    payload = {"machine": machine, "command": command, "stamp": stamp, "results": results}
    (log_dir / "results.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    failed = any("loadgen" not in r and not r.get("error", "").startswith("skipped")
                 for b in results for r in b["rows"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
