"""One TCP connection per Modbus gateway (host, port), shared by every unit id behind it.

Many Modbus TCP gateways (to RS-485 lines of meters, chillers, drives) accept
only one or two connections. So every Modbus source that reads a unit id
behind the same host and port borrows the same L{Gateway} from a
L{GatewayPool}: one pymodbus synchronous client, one socket, and a lock so
that the producers' requests go out one at a time. The connection is opened
by the first read and closed when the last source lets go of it, or when a
request gets no answer (a late answer must never be taken for the next one).
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Any, Callable

#: Modbus exception codes -> the reason they are counted under (docs/sources.md).
EXCEPTION_REASONS = {
    0x01: "illegal_function",
    0x02: "illegal_address",
    0x03: "illegal_value",
    0x04: "device_failure",
    0x05: "acknowledge",
    0x06: "busy",
    0x08: "memory_parity_error",
    0x0A: "gateway_path_unavailable",
    0x0B: "gateway_target_failed",
}
ILLEGAL_ADDRESS = 0x02
#: Answers that say "not now" rather than "never": retried, and they never change the read plan.
TRANSIENT = frozenset({0x06, 0x0A, 0x0B})
#: Answers from a gateway that cannot reach the unit behind it.
GATEWAY_CODES = frozenset({0x0A, 0x0B})

_READ = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}

ClientFactory = Callable[[str, int, float], Any]


def exception_reason(code: int) -> str:
    """The counter name of a Modbus exception code."""
    return EXCEPTION_REASONS.get(code, f"exception_{code:#04x}")


class DeviceUnreachable(Exception):
    """The device cannot be connected to, or stopped answering."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What one read got: the raw registers (or bits), or the Modbus exception code of a refusal."""

    values: list[int] | list[bool] | None = None
    code: int | None = None


def _unit_kwarg(method: Callable[..., Any]) -> str:
    """The keyword a pymodbus read method takes for the unit id (it was renamed across versions)."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return "device_id"
    for name in ("device_id", "slave", "unit"):
        if name in params:
            return name
    return "device_id"


class Gateway:
    """One Modbus TCP connection; L{read} may be called from several producer threads."""

    def __init__(self, host: str, port: int, timeout: float, client_factory: ClientFactory):
        self.host = host
        self.port = port
        self.timeout = timeout
        self._client_factory = client_factory
        self._lock = threading.Lock()
        self._client: Any = None
        self._unit_keyword: dict[str, str] = {}
        #: Sources that hold it (L{GatewayPool} counts them under its own lock).
        self.users = 0
        #: TCP connections opened so far (for tests and health pages).
        self.connects = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def read(self, table: str, address: int, count: int, unit_id: int) -> Reply:
        """Read C{count} registers (or bits) of C{table} from unit C{unit_id}; connect first if need be.

        Raises L{DeviceUnreachable} when the gateway cannot be reached or does not answer.
        """
        with self._lock:
            client = self._connected()
            method = getattr(client, _READ[table])
            keyword = self._unit_keyword.get(table)
            if keyword is None:
                keyword = self._unit_keyword[table] = _unit_kwarg(method)
            try:
                response = method(address, count=count, **{keyword: unit_id})
            except Exception as e:
                self._drop()
                raise DeviceUnreachable(f"no answer from {self.address}: {e}") from e
        if response is None:
            return Reply(code=0)
        if response.isError():
            return Reply(code=int(getattr(response, "exception_code", 0) or 0))
        if table in ("coil", "discrete"):
            return Reply(values=[bool(b) for b in response.bits[:count]])
        registers = [int(r) for r in response.registers]
        if len(registers) < count:
            return Reply(code=0)
        return Reply(values=registers)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connected(self) -> Any:
        if self._client is None:
            self._client = self._client_factory(self.host, self.port, self.timeout)
        try:
            if getattr(self._client, "connected", False):
                return self._client
            if not self._client.connect():
                raise DeviceUnreachable(f"cannot connect to {self.address}")
        except DeviceUnreachable:
            self._drop()
            raise
        except Exception as e:
            self._drop()
            raise DeviceUnreachable(f"cannot connect to {self.address}: {e}") from e
        self.connects += 1
        return self._client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass


class GatewayPool:
    """The open gateways by (host, port): L{acquire} one per source, L{release} it when the source stops."""

    def __init__(self, client_factory: ClientFactory | None = None):
        self._client_factory = client_factory or pymodbus_client
        self._lock = threading.Lock()
        self._gateways: dict[tuple[str, int], Gateway] = {}

    def acquire(self, host: str, port: int, timeout: float) -> Gateway:
        """The gateway at C{host:port}, made on first use.

        Its timeout is the longest of its sources' (from its next connection on):
        one answer at a time goes over the line, so the slowest device sets the pace.
        """
        with self._lock:
            gateway = self._gateways.get((host, port))
            if gateway is None:
                gateway = self._gateways[(host, port)] = Gateway(host, port, timeout, self._client_factory)
            gateway.timeout = max(gateway.timeout, timeout)
            gateway.users += 1
            return gateway

    def release(self, gateway: Gateway) -> None:
        """One source less; the last one closes the connection."""
        with self._lock:
            gateway.users -= 1
            if gateway.users > 0:
                return
            if self._gateways.get((gateway.host, gateway.port)) is gateway:
                del self._gateways[(gateway.host, gateway.port)]
        gateway.close()

    def get(self, host: str, port: int) -> Gateway | None:
        with self._lock:
            return self._gateways.get((host, port))


def pymodbus_client(host: str, port: int, timeout: float) -> Any:
    """pymodbus's synchronous TCP client; we retry ourselves, so its own retries are off."""
    from pymodbus.client import ModbusTcpClient

    return ModbusTcpClient(host, port=port, timeout=timeout, retries=0)


#: The process's gateways: every Modbus source shares them unless it is given a pool of its own.
GATEWAYS = GatewayPool()

__all__ = [
    "DeviceUnreachable", "EXCEPTION_REASONS", "GATEWAYS", "Gateway", "GatewayPool", "Reply", "TRANSIENT",
    "exception_reason", "pymodbus_client",
]
