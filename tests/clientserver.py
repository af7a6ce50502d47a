"""A real hvac-push server (twistd subprocess) for the client, CLI and AsyncAPI tests, which run without Twisted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from hvac_push.client import Mirror
from tests.test_operations import twistd, wait_ready
from tests.wsprobe import bound_ports, first_messages

ROOT = Path(__file__).resolve().parents[1]

#: A plant whose one configured point is always above its high limit: an alarm at once.
ALARM_PLANT = """\
[simulator]
units = 2
rate = 40
seed = 3

[units.chiller-1.points.supply_temp]
source = "simulator"
unit = "°C"

[units.chiller-1.points.supply_temp.alarm]
high = -100.0
severity = "major"
"""


class Server:
    """twistd -n hvacpush on a loopback port, stopped with SIGTERM."""

    def __init__(self, cwd: Path, *args: str, port: int | None = None) -> None:
        #: 0 until the first start, which listens on port 0 and reads the real port back (--port-file):
        #: no race with other processes for a "free" port. Restarts reuse the port.
        self.port = port or 0
        self.cwd = cwd
        self.args = args
        self.process: subprocess.Popen[str] | None = None
        self.output = ""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> Server:
        port_file = self.cwd / f"twistd-ports-{id(self)}"
        port_file.unlink(missing_ok=True)
        self.process = twistd(
            self.cwd, "--listen", f"tcp:{self.port}:interface=127.0.0.1", "--port-file", str(port_file), *self.args
        )
        try:
            process = self.process
            [self.port] = bound_ports(port_file, alive=lambda: process.poll() is None)
            wait_ready(self.port)
        except (RuntimeError, OSError):  # it died, never wrote its ports, or never answered /healthz
            self.stop()
            raise AssertionError(f"twistd did not start:\n{self.output}") from None
        return self

    def stop(self) -> str:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        if self.process is not None:
            try:
                out, _ = self.process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                out, _ = self.process.communicate()
            self.output += out
            self.process = None
        return self.output

    def snapshot(self, points: str = "#") -> dict[str, Any]:
        """A fresh opening snapshot, from a connection of its own."""
        (message,) = first_messages(self.port, path=f"/ws?points={points.replace('#', '%23')}")
        return message


@contextlib.contextmanager
def running(cwd: Path, *args: str, port: int | None = None) -> Iterator[Server]:
    server = Server(cwd, *args, port=port).start()
    try:
        yield server
    finally:
        output = server.stop()
        assert "Traceback" not in output, output


async def matches_a_fresh_snapshot(mirror: Mirror, server: Server, points: str = "#", timeout: float = 15) -> None:
    """Assert the mirror holds what a new client would get.

    The simulator keeps publishing, so a point may legitimately be newer in the
    mirror than in the snapshot: then it changed after the snapshot was taken.
    An older point, a missing or an extra one is a gap.
    """
    snapshot = await asyncio.to_thread(server.snapshot, points)
    await mirror.wait_until(lambda m: (m.version or 0) >= snapshot["version"], timeout)
    assert mirror.epoch == snapshot["epoch"]
    assert set(mirror.points) == set(snapshot["points"])
    for point_id, body in snapshot["points"].items():
        mine = mirror.points[point_id]
        if mine.version == body["version"]:
            assert mine.to_wire() == body, point_id
        else:
            assert mine.version > snapshot["version"], (point_id, mine, body)


class CuttableProxy:
    """A TCP proxy in front of the server that can drop every connection, or refuse new ones: a network failure."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refusing = False
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def process_lines(argv: Sequence[str], count: int, timeout: float = 30) -> tuple[list[str], int | None]:
    """Run a command until it printed C{count} lines, exited, or C{timeout} passed: its lines and exit code."""
    process = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str | None] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    got: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                break
            got.append(line)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    return got, process.returncode
