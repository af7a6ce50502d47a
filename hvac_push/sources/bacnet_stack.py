"""The bacpypes3 side shared by the BACnet producer and discovery: binding the socket, decoding values."""

from __future__ import annotations

import asyncio
import errno
import math
import socket
from typing import Any, Callable

from hvac_push.core.points import Value
from hvac_push.sources.bacnet_maps import parse_ip_address


class PortInUse(Exception):
    """The local UDP port is taken by another program."""


def open_application(
    address: str,
    device_instance: int,
    device_name: str,
    apdu_timeout: float,
    retries: int,
    on_malformed: Callable[[str], None] | None = None,
    app_class: Any = None,
) -> Any:
    """A bacpypes3 application bound to C{address} (call in a running loop).

    The socket is bound here, without SO_REUSEPORT, so a port another program
    holds is a L{PortInUse} error at once instead of a silently shared port.
    """
    from bacpypes3.app import Application
    from bacpypes3.comm import bind
    from bacpypes3.ipv4 import IPv4DatagramServer
    from bacpypes3.ipv4.bvll import BVLLCodec
    from bacpypes3.ipv4.service import BIPNormal, UDPMultiplexer
    from bacpypes3.local.device import DeviceObject
    from bacpypes3.pdu import IPv4Address

    host, prefix, port = parse_ip_address(address)
    local = IPv4Address(f"{host}/{prefix}:{port}" if prefix is not None else f"{host}:{port}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"local address {host}:{port}: UDP port {port} is already in use") from None
        raise PortInUse(f"local address {host}:{port}: cannot bind: {e.strerror or e}") from None
    sock.setblocking(False)

    class Datagrams(IPv4DatagramServer):
        """Counts packets the stack cannot decode, instead of losing them silently."""

        async def confirmation(self, pdu: Any) -> None:
            source = getattr(pdu.pduSource, "addrTuple", None)
            if source == self.local_address:
                return
            data = bytes(pdu.pduData or b"")
            if not data or data[0] != 0x81:
                if on_malformed is not None:
                    on_malformed(f"not a BACnet/IP packet from {source}")
                return
            try:
                await self.response(pdu)
            except Exception as e:
                if on_malformed is not None:
                    on_malformed(f"malformed packet from {source}: {e}")

    class LinkLayer(BIPNormal):
        def __init__(self) -> None:
            BIPNormal.__init__(self)
            self.codec = BVLLCodec()
            self.multiplexer = UDPMultiplexer()
            self.server = Datagrams(local, no_broadcast=True, bind_socket=sock)
            bind(self, self.codec, self.multiplexer.annexJ)
            bind(self.multiplexer, self.server)
            if local.addrBroadcastTuple != local.addrTuple:
                # Receive broadcasts (I-Am replies) on the subnet's broadcast address too.
                loop = asyncio.get_running_loop()
                task = loop.create_task(self.server.retrying_create_datagram_endpoint(loop, local.addrBroadcastTuple))
                self.server.broadcast_address = local.addrBroadcastTuple
                task.add_done_callback(lambda t: self.server.set_broadcast_transport_protocol(local, t))
                self.server._transport_tasks.append(task)

        def close(self) -> None:
            self.server.close()

    device = DeviceObject(
        objectIdentifier=("device", device_instance),
        objectName=device_name,
        vendorIdentifier=999,
        apduTimeout=max(1, int(apdu_timeout * 1000)),
        numberOfApduRetries=retries,
    )
    app = (app_class or Application).from_object_list([device])
    link = LinkLayer()
    app.nsap.bind(link, address=local)
    app.link_layers[("network-port", 1)] = link  # so app.close() closes the socket
    return app


def to_value(raw: Any) -> Value:
    """A bacpypes3 value as a point value; C{ValueError} for what a point cannot carry."""
    from bacpypes3.primitivedata import (
        Boolean, CharacterString, Double, Enumerated, Null, Real,
    )

    if raw is None or isinstance(raw, Null):
        raise ValueError("the device sent no value (null)")
    if isinstance(raw, Boolean):
        return bool(raw)
    if isinstance(raw, Enumerated):
        text = str(raw)
        if text in ("active", "inactive"):  # BinaryPV
            return text == "active"
        return text
    if isinstance(raw, float):
        number = float(raw)
        if not math.isfinite(number):
            raise ValueError(f"not a finite number: {number}")
        if isinstance(raw, Real) and not isinstance(raw, Double):
            number = float(f"{number:.7g}")  # the precision a REAL really has
        return number
    if isinstance(raw, int):
        if abs(int(raw)) > 2**53:
            raise ValueError("integer outside the exact JSON range")
        return int(raw)
    if isinstance(raw, (CharacterString, str)):
        return str(raw)[:256]
    raise ValueError(f"a {type(raw).__name__} is not a single value")



__all__ = ["PortInUse", "open_application", "to_value"]
