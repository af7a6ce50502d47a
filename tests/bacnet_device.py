"""A small BACnet/IP device for tests, written with bacpypes3, in its own thread and asyncio loop.

It binds 127.0.0.1 on a free UDP port below the ephemeral range itself and holds analog, binary and
multi-state objects. Most of them support COV; C{analog-input,1} does not
(its class has no COV criteria, so SubscribeCOV is refused and it must be
polled). The test thread changes values and status with L{set} and
L{set_status}; L{stop} closes the socket (the device stops answering) and
L{start} opens it again on the same port with the same values.

Run it alone with C{python -m tests.bacnet_device PORT} to try the discovery tool by hand.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from typing import Any, Callable

from bacpypes3.app import Application
from bacpypes3.local.analog import AnalogInputObject, AnalogValueObject
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.cov import GenericCriteria
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import MultiStateValueObject
from bacpypes3.local.networkport import NetworkPortObject

from tests.wsprobe import port_held, restartable_port


class _MultiStateValue(MultiStateValueObject):
    """bacpypes3's multi-state value asks for a cov-increment it does not have; COV on any change instead."""

    _cov_criteria = GenericCriteria


class _PolledOnlyAnalogInput(AnalogInputObject):
    """An analog input that refuses COV subscriptions (like many older controllers)."""

    _cov_criteria = None


#: Object id -> (class, initial properties). Names and units are what discovery prints.
OBJECTS: dict[str, tuple[type, dict[str, Any]]] = {
    "analog-input,1": (_PolledOnlyAnalogInput, dict(
        objectName="Supply Temp", presentValue=12.5, units="degrees-celsius", covIncrement=0.1,
        reliability="no-fault-detected", outOfService=False, eventState="normal",
    )),
    "analog-value,1": (AnalogValueObject, dict(
        objectName="Zone Temp", presentValue=21.0, units="degrees-celsius", covIncrement=0.1,
        reliability="no-fault-detected", outOfService=False, eventState="normal",
    )),
    "analog-value,2": (AnalogValueObject, dict(
        objectName="Valve Position", presentValue=40.0, units="percent", covIncrement=1.0,
        reliability="no-fault-detected", outOfService=False, eventState="normal",
    )),
    "binary-value,1": (BinaryValueObject, dict(
        objectName="Fan Run", presentValue="inactive",
        reliability="no-fault-detected", outOfService=False, eventState="normal",
    )),
    "multi-state-value,1": (_MultiStateValue, dict(
        objectName="Mode", presentValue=1, numberOfStates=3, stateText=["off", "heat", "cool"],
        reliability="no-fault-detected", outOfService=False, eventState="normal",
    )),
}


class BacnetDevice:
    """A bacpypes3 device on 127.0.0.1:C{port}; every method is called from the test's thread."""

    def __init__(self, port: int | None = None, instance: int = 1001, name: str = "Test AHU"):
        #: Bound by the device itself (no port handed on); below the ephemeral range, so a restart finds it
        #: free. A port the test did not choose moves on a clash at the first start.
        self.port = port or restartable_port(socket.SOCK_DGRAM)
        self._may_move = port is None
        self.instance = instance
        self.name = name
        #: Current values and status, kept across stop/start.
        self.state: dict[str, dict[str, Any]] = {oid: dict(props) for oid, (_, props) in OBJECTS.items()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._app: Any = None
        self._objects: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        for attempt in range(3 if self._may_move else 1):
            try:
                self._start(timeout)
                break
            except RuntimeError:
                # bacpypes3 keeps retrying a taken port instead of failing: the start times out.
                self.stop()
                if not self._may_move or not port_held(self.port, socket.SOCK_DGRAM) or attempt == 2:
                    raise
                self.port = restartable_port(socket.SOCK_DGRAM)
        self._may_move = False

    def _start(self, timeout: float) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failed: list[BaseException] = []

        async def open_device() -> None:
            device = DeviceObject(
                objectIdentifier=("device", self.instance), objectName=self.name, vendorIdentifier=999,
            )
            port_object = NetworkPortObject(
                self.address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1",
            )
            objects = [device, port_object]
            for oid, (cls, _) in OBJECTS.items():
                obj = cls(objectIdentifier=oid, **self.state[oid])
                self._objects[oid] = obj
                objects.append(obj)
            self._app = Application.from_object_list(objects)
            # Wait until the socket is bound, so the device answers as soon as start() returns.
            for link in self._app.link_layers.values():
                await asyncio.gather(*link.server._transport_tasks)

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(open_device())
            except BaseException as e:
                failed.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=main, name=f"bacnet-device-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failed:
            raise RuntimeError(f"the BACnet device did not start: {failed[:1]}")

    def stop(self) -> None:
        """Close the socket and stop the loop: the device no longer answers anything."""
        loop, thread, app = self._loop, self._thread, self._app
        self._loop = self._thread = self._app = None
        if loop is None or thread is None:
            return
        if app is not None:
            self._call(app.close, loop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        self._objects = {}

    # -- changes ---------------------------------------------------------------

    def set(self, oid: str, value: Any, prop: str = "presentValue") -> None:
        """Change a property, as the device's own logic would (COV subscribers are notified)."""
        self.state[oid][prop] = value

        def change() -> None:
            setattr(self._objects[oid], prop, value)

        self._call(change)

    def set_status(self, oid: str, *, reliability: str | None = None, out_of_service: bool | None = None) -> None:
        """Change reliability / out-of-service, then notify COV subscribers of the new status-flags.

        bacpypes3 derives status-flags from these but does not watch them, so the
        device sends the notification itself, as a real device would.
        """
        if reliability is not None:
            self.state[oid]["reliability"] = reliability
        if out_of_service is not None:
            self.state[oid]["outOfService"] = out_of_service

        def change() -> None:
            obj = self._objects[oid]
            before = obj.statusFlags
            if reliability is not None:
                obj.reliability = reliability
            if out_of_service is not None:
                obj.outOfService = out_of_service
            # What bacpypes3 leaves out: tell the COV detection that status-flags changed.
            for monitor in list(obj._property_monitors["statusFlags"]):
                monitor(before, obj.statusFlags)

        self._call(change)

    def delete(self, oid: str) -> None:
        """Remove an object from the device (reads and COV renewals of it then fail with unknown-object)."""

        def remove() -> None:
            self._app.delete_object(self._objects.pop(oid))

        self._call(remove)

    def subscriptions(self) -> int:
        """How many COV subscriptions the device holds now."""

        def count() -> int:
            return sum(len(d.cov_subscriptions) for d in self._app._cov_detections.values())

        return int(self._call(count))

    def _call(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop | None = None) -> Any:
        loop = loop or self._loop
        if loop is None:
            raise RuntimeError("the device is stopped")

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(5)


if __name__ == "__main__":
    device = BacnetDevice(int(sys.argv[1]) if len(sys.argv) > 1 else None)
    device.start()
    print(f"device {device.instance} on {device.address}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        device.stop()
