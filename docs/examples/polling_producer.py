"""A producer: poll a device every few seconds and publish what it reads.

A producer is any object with a ``name`` and a ``run(publish, stop)`` method.
``run`` is called in a thread of its own, so blocking I/O (a serial port, a
vendor SDK, an HTTP call) is fine here. It publishes batches of ``Sample`` and
returns once ``stop`` is set. If it raises, hvac-push logs the error and calls
``run`` again after a backoff (0.5 s doubling to 30 s).
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

from hvac_push.core.points import Sample

#: What a device read returns: point id -> (value, unit).
Readings = dict[str, tuple[float | bool | str, str]]


class PollingProducer:
    def __init__(self, name: str, read: Callable[[], Readings], period: float = 5.0):
        self.name = name
        self.read = read
        self.period = period

    def run(self, publish: Callable[[Sequence[Sample]], None], stop: threading.Event) -> None:
        while not stop.is_set():
            readings = self.read()  # may block, may raise: both are fine in a producer
            # One batch per poll: one hand-over to the reactor, one notification.
            publish([Sample(point_id, value, unit) for point_id, (value, unit) in readings.items()])
            stop.wait(self.period)  # returns early when the server stops


def read_thermostat() -> Readings:
    """Stands in for a real device read (Modbus, BACnet, a REST API...)."""
    return {
        "office/zone-1/room_temp": (21.7, "°C"),
        "office/zone-1/setpoint": (21.0, "°C"),
        "office/zone-1/heating": (False, ""),
    }


if __name__ == "__main__":
    from twisted.internet import reactor

    from hvac_push import PushService

    push = PushService(reactor)
    push.add_producer(PollingProducer("thermostat", read_thermostat, period=2.0))
    push.add_listener("tcp:8080:interface=127.0.0.1")
    push.startService()
    reactor.addSystemEventTrigger("before", "shutdown", push.stopService)  # 1001 to clients
    reactor.run()
