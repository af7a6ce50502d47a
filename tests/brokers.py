"""Real peers for source tests: a mosquitto child process and a pymodbus TCP server thread.

Both listen on 127.0.0.1 on a free port below the ephemeral range, never on a
system service's port, and both can be stopped and started again on the same
port to test outages.
Import the fixtures into a test module: C{from tests.brokers import mosquitto, modbus_server}.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest

from tests.wsprobe import restartable_port, wait_owned


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _wait_accepting(port: int, timeout: float, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 1):
        if alive is not None and not alive():
            raise RuntimeError("the server process exited while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
    raise TimeoutError(f"nothing accepted connections on 127.0.0.1:{port} within {timeout}s")


def kill_hard(process: subprocess.Popen[Any] | None) -> None:
    """SIGKILL a child broker (as a crash would) and reap it; nothing if it is gone already."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGKILL)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class Mosquitto:
    """A private mosquitto broker: generated config in C{folder}, loopback only, no persistence."""

    def __init__(
        self, folder: Path, port: int | None = None, extra_config: Sequence[str] = (), allow_anonymous: bool = True
    ):
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (scripts/bootstrap --test installs it)")
        self.binary = binary
        self.folder = folder
        # Below the ephemeral range: a restart finds its port free (tests/wsprobe.restartable_port).
        self.port = port or restartable_port()
        self._may_move = port is None  # until its first start: nobody knows the port yet
        if self.port == 1883:
            raise ValueError("never use the system broker's port")
        self.extra_config = list(extra_config)
        self.allow_anonymous = allow_anonymous
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = folder / f"mosquitto-{self.port}.log"

    def start(self, timeout: float = 10.0, retry_on_clash: bool | None = None) -> None:
        """Start it and wait until it accepts connections.

        mosquitto cannot report a port it picked itself, so the port was picked
        free beforehand, and another process may have taken it meanwhile: the
        start checks that the broker itself listens on it. With
        C{retry_on_clash} (by default: on the first start of a broker whose
        port was picked here, which nobody has been told yet) such a clash
        picks a new port and tries again, up to three times, instead of
        failing the test.
        """
        if retry_on_clash is None:
            retry_on_clash = self._may_move
        for attempt in range(3 if retry_on_clash else 1):
            try:
                self._start(timeout)
                break
            except RuntimeError as e:
                if not retry_on_clash or "Address already in use" not in str(e) or attempt == 2:
                    raise
                self.port = restartable_port()
                self.log_path = self.folder / f"mosquitto-{self.port}.log"
        self._may_move = False

    def _start(self, timeout: float) -> None:
        conf = self.folder / f"mosquitto-{self.port}.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
                    "persistence false",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    # As root, mosquitto would switch to its own user, which cannot read pytest's tmp folders.
                    *(["user root"] if os.geteuid() == 0 else []),
                    *self.extra_config,
                ]
            )
            + "\n"
        )
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        process = self.process
        try:
            _wait_accepting(self.port, timeout, alive=lambda: process.poll() is None)
            # Whoever accepted may be another process that took the port: make sure it is this broker.
            wait_owned(process, [self.port], timeout)
        except Exception:
            self.kill()
            raise RuntimeError(f"mosquitto did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def kill(self) -> None:
        """Kill it hard (SIGKILL), as a crash or a pulled cable would."""
        process, self.process = self.process, None
        kill_hard(process)

    def restart(self) -> None:
        self.kill()
        self.start()

    def publish(self, topic: str, payload: str | bytes, retain: bool = False, qos: int = 1) -> None:
        """Publish one message with a separate paho client (blocking; call it in a thread)."""
        from paho.mqtt import publish

        publish.single(topic, payload, qos=qos, retain=retain, hostname="127.0.0.1", port=self.port)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()  # moves on a clash: nobody knows its port yet
    try:
        yield broker
    finally:
        broker.kill()


_FUNCTION_CODES = {"coil": 15, "discrete": 2, "holding": 16, "input": 4}


class ModbusServer:
    """A pymodbus TCP server (device id C{device_id}) in its own thread and asyncio loop.

    Every table holds C{size} zeroed registers/bits from address 0; addresses
    beyond are invalid, so reading them gets an exception response. L{set}
    writes straight into the datastore from the test's thread.
    """

    def __init__(
        self, port: int | None = None, device_id: int = 1, size: int = 200, device_ids: Sequence[int] = (),
    ):
        #: Bound by the server itself (no port handed on); below the ephemeral range, so L{restart} finds it
        #: free. A port the test did not choose moves on a clash at the first start.
        self.port = port or restartable_port()
        self._may_move = port is None
        self.device_id = device_ids[0] if device_ids else device_id
        #: Every unit id it answers for (a gateway to several devices); C{device_id} alone by default.
        self.device_ids = tuple(device_ids) or (device_id,)
        self.size = size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        #: TCP connections accepted so far (from the server's connect trace).
        self.connections = 0
        #: Every request received, as (device id, function code, address, count), in order.
        self.requests: list[tuple[int, int, int, int]] = []
        #: Set by a test: called with each request's (device id, function code, address, count); a
        #: Modbus exception code it returns is sent instead of the answer (0x06 busy, 0x0B ...).
        self.refuse: Callable[[tuple[int, int, int, int]], int | None] | None = None
        self._refusals: dict[int, int] = {}

    def start(self, timeout: float = 10.0) -> None:
        for attempt in range(3 if self._may_move else 1):
            try:
                self._start(timeout)
                break
            except RuntimeError as e:
                if not self._may_move or "Could not start listen" not in str(e) or attempt == 2:
                    raise
                self.port = restartable_port()
        self._may_move = False

    def _start(self, timeout: float) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failed: list[BaseException] = []

        async def serve() -> None:
            devices = [
                SimDevice(
                    id=device_id,
                    simdata=(
                        [SimData(0, count=self.size, values=False, datatype=DataType.BITS)],
                        [SimData(0, count=self.size, values=False, datatype=DataType.BITS)],
                        [SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)],
                        [SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)],
                    ),
                )
                for device_id in self.device_ids
            ]
            self._server = ModbusTcpServer(
                devices if len(devices) > 1 else devices[0],
                address=("127.0.0.1", self.port),
                trace_pdu=self._trace_pdu,
                trace_connect=self._trace_connect,
            )
            await self._server.serve_forever(background=True)
            ready.set()
            await self._server.serving

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except BaseException as e:  # reported to start()
                failed.append(e)
            finally:
                ready.set()
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=main, name=f"modbus-server-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failed:
            raise RuntimeError(f"the Modbus server did not start: {failed[:1]}")
        _wait_accepting(self.port, timeout)
        # That probe was a connection too: wait until the server has seen it, then count from zero.
        for _ in range(100):
            if self.connections:
                break
            time.sleep(0.01)
        self.connections = 0
        self.requests.clear()

    def _trace_connect(self, connected: bool) -> None:
        if connected:
            self.connections += 1

    def _trace_pdu(self, sending: bool, pdu: Any) -> Any:
        """Record each request; answer it with an exception when L{refuse} says so."""
        from pymodbus.pdu import ExceptionResponse

        if not sending:
            request = (pdu.dev_id, pdu.function_code, pdu.address, pdu.count)
            self.requests.append(request)
            code = self.refuse(request) if self.refuse is not None else None
            if code:
                self._refusals[pdu.transaction_id] = code
            return pdu
        code = self._refusals.pop(pdu.transaction_id, None)
        if code is None:
            return pdu
        return ExceptionResponse(
            pdu.function_code & 0x7F, code, device_id=pdu.dev_id, transaction=pdu.transaction_id
        )

    def set(
        self, table: str, address: int, values: Sequence[int] | Sequence[bool], device_id: int | None = None
    ) -> None:
        """Write raw registers (or bits) into the datastore of C{device_id} (the first device by default)."""
        assert self._loop is not None and self._server is not None
        coroutine = self._server.context.async_setValues(
            self.device_id if device_id is None else device_id, _FUNCTION_CODES[table], address, list(values)
        )
        error = asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(5)
        if error:
            raise ValueError(f"datastore refused {table}[{address}] = {values}: {error}")

    def stop(self) -> None:
        loop, thread, server = self._loop, self._thread, self._server
        self._loop = self._thread = self._server = None
        if loop is None or thread is None:
            return
        if server is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(5)
            except Exception:
                pass
        thread.join(5)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def modbus_server() -> Iterator[ModbusServer]:
    server = ModbusServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_tls_files(folder: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, as PEM files in C{folder}."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hvac-push test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key_pem(server_key))
    return files
