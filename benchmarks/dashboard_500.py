"""The dashboard at 500 simulated units: how long the overview takes to show every unit, and the page's JS heap.

A C{twistd -n hvacpush --sim-units N} runs as a child process on a free loopback
port; Debian's Chromium (through Playwright) opens the overview, and the script
prints the time from navigation until every tile shows its values, the points
the server says the page is subscribed to (C{/metrics}), and the JS heap after
a garbage collection at a few moments up to C{--seconds}.

    .venv/bin/python benchmarks/dashboard_500.py                 # 500 units, heap until 60 s
    .venv/bin/python benchmarks/dashboard_500.py --units 100 --seconds 20

Bounded: one page, one server, both ended at the end (or on error).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    twistd = str(Path(sys.executable).with_name("twistd"))
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "hvacpush", "--listen", f"tcp:{port}:interface=127.0.0.1",
             "--sim-units", str(args.units), "--store", "memory"],
            cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(url + "healthz", timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the server did not start")
                    time.sleep(0.1)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                started = time.monotonic()
                page.goto(url)
                page.wait_for_selector(f'#overview[data-units="{args.units}"]', state="attached", timeout=60000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.tile-val .num')].every(n => n.textContent !== '\\u2014')",
                    timeout=60000,
                )
                print(f"overview of {args.units} units with every value: {time.monotonic() - started:.2f} s")
                text = urllib.request.urlopen(url + "metrics", timeout=5).read().decode()
                subscribed = re.search(r"^hvacpush_subscribed_points (\S+)$", text, re.M)
                print(f"points the page is subscribed to (server): {subscribed.group(1) if subscribed else '?'}"
                      f" of {args.units * 7}")
                cdp = page.context.new_cdp_session(page)
                for at in (10.0, 20.0, 30.0, args.seconds):
                    if at > args.seconds:
                        continue
                    page.wait_for_timeout(max(0.0, at - (time.monotonic() - started)) * 1000)
                    cdp.send("HeapProfiler.collectGarbage")
                    heap = cdp.send("Runtime.getHeapUsage")["usedSize"]
                    print(f"JS heap after GC at {time.monotonic() - started:5.1f} s: {heap / 2**20:.1f} MB")
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
