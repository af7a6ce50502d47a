"""A tiny blocking WebSocket reader for tests that talk to a twistd subprocess (frames: hvac_push.testing)."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from typing import Any, Callable, Iterator, Sequence, TypeVar

import pytest

from hvac_push.testing import TEXT, decode_frame, json_object, upgrade_request


def first_messages(port: int, count: int = 1, path: str = "/ws", timeout: float = 10.0) -> list[dict[str, Any]]:
    """Connect to 127.0.0.1:port, upgrade, and return the first C{count} JSON messages."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with sock:
        sock.settimeout(timeout)
        sock.sendall(upgrade_request(path, {"Host": f"127.0.0.1:{port}"}))
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during handshake")
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n")[0].decode())
        messages: list[dict[str, Any]] = []
        parts: list[bytes] = []
        while len(messages) < count:
            while (decoded := decode_frame(buffer)) is None:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                buffer += chunk
            frame, end = decoded
            buffer = buffer[end:]
            if frame.opcode == TEXT:
                parts = [frame.payload]
            elif frame.opcode == 0x0 and parts:  # a continuation: large messages come in fragments
                parts.append(frame.payload)
            else:
                continue
            if frame.fin:
                messages.append(json_object(b"".join(parts)))
                parts = []
        return messages


@contextlib.contextmanager
def refused_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> Iterator[int]:
    """A loopback port held bound but never listening (TCP) or read (UDP) for the block: nothing answers there.

    A TCP connection to it is refused. The socket stays bound, so no other
    process can start serving there meanwhile (a port picked and closed could
    be taken and answer).
    """
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nobody listens on for the whole test (L{refused_port}); import it into the test module."""
    with refused_port() as port:
        yield port


#: Ports below the kernel's ephemeral range are never given to outgoing connections.
_EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
_taken: set[int] = set()


def restartable_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A free port outside the kernel's ephemeral range, for a server the test kills and starts again on it.

    A port the kernel picks lies in the ephemeral range: while its server is
    down, any outgoing connection on the machine may be given it as its local
    port, and the restarted server then cannot bind it. A port below that
    range is only ever taken by a listener that asks for it by number. Also the
    port for a child that cannot report the port it bound (L{start_owning}).
    It was free when picked, not bound since: start its server with
    L{first_start} or L{start_owning}, which move on a clash.
    """
    try:
        with open(_EPHEMERAL_RANGE, encoding="ascii") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = range(10000, max(10001, low))
    for _ in range(500):
        port = random.choice(candidates)
        if port in _taken:
            continue
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def bound_ports(path: os.PathLike[str] | str, alive: Any = None, timeout: float = 30.0) -> list[int]:
    """The ports a twistd started with C{--listen tcp:0... --port-file PATH} bound, once it wrote them.

    C{alive} (e.g. C{lambda: process.poll() is None}) ends the wait early when the process died.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, encoding="ascii") as f:
                return [int(line) for line in f.read().split()]
        except FileNotFoundError:
            if alive is not None and not alive():
                raise RuntimeError("the server exited before it listened") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"no port file {path} within {timeout}s") from None
            time.sleep(0.02)


T = TypeVar("T")


def first_start(start: Callable[[int], T], attempts: int = 3) -> T:
    """C{start(port)} on a L{restartable_port}, and on another one when it fails with "already in use".

    For a server the test restarts on its port later: only its first start may
    move, since nobody has been told the port yet.
    """
    for attempt in range(attempts):
        try:
            return start(restartable_port())
        except Exception as e:
            if attempt == attempts - 1 or "already in use" not in str(e):
                raise
    raise AssertionError("unreachable")


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process C{pid} or its children listen on."""
    import psutil

    try:
        parent = psutil.Process(pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    ports = set()
    for process in processes:
        try:
            ports |= {c.laddr.port for c in process.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            pass
    return ports


def wait_owned(process: Any, ports: Sequence[int], timeout: float = 30.0) -> None:
    """Wait until C{process} (a Popen) itself listens on every one of C{ports}, not another process that took one."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the child exited before it listened on {list(ports)}")
        if set(ports) <= listening_ports(process.pid):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the child never listened on all of {list(ports)} within {timeout}s")
        time.sleep(0.02)


def port_held(port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> bool:
    """Whether some socket holds 127.0.0.1:C{port} now (a bind of it fails)."""
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def start_owning(start: Callable[[list[int]], Any], count: int = 1, attempts: int = 3,
                 timeout: float = 30.0) -> tuple[Any, list[int]]:
    """Start a child that cannot report its ports (C{start(ports)} returns its Popen) on picked ports.

    Returns once the child itself listens on all of them. When it did not,
    and one of the ports is held by someone else (the pick was taken
    meanwhile), the child is killed and started again on new ports.
    """
    for attempt in range(attempts):
        ports = [restartable_port() for _ in range(count)]
        process = start(ports)
        try:
            wait_owned(process, ports, timeout)
            return process, ports
        except (RuntimeError, TimeoutError) as e:
            if process.poll() is None:
                process.kill()
            output, _ = process.communicate(timeout=10)
            if attempt == attempts - 1 or not any(port_held(p) for p in ports):
                raise RuntimeError(f"{e}; its output: {(output or '')[-3000:]}") from e
    raise AssertionError("unreachable")
