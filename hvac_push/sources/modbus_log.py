"""pymodbus logs through the standard library's C{logging}; this hands its records to Twisted's logger.

Without it, twistd shows them as C{[stderr#error] ...} lines whatever their
level (or Python's last-resort handler prints them). L{route_pymodbus_logs}
gives the C{pymodbus} logger one handler that emits each record as a Twisted
log event at the matching level, in the C{pymodbus} namespace, and stops it
from propagating to the root logger, so each message shows once.
"""

from __future__ import annotations

import logging
import threading

from twisted.logger import Logger, LogLevel

_LEVELS: tuple[tuple[int, LogLevel], ...] = (
    (logging.CRITICAL, LogLevel.critical),
    (logging.ERROR, LogLevel.error),
    (logging.WARNING, LogLevel.warn),
    (logging.INFO, LogLevel.info),
)
_lock = threading.Lock()


def twisted_level(levelno: int) -> LogLevel:
    """The Twisted level of a standard library level number (anything below INFO is debug)."""
    for threshold, level in _LEVELS:
        if levelno >= threshold:
            return level
    debug: LogLevel = LogLevel.debug
    return debug


class TwistedLogHandler(logging.Handler):
    """Emits standard library log records as Twisted log events (thread-safe: Twisted's publisher is)."""

    def __init__(self, namespace: str):
        super().__init__()
        self.log = Logger(namespace=namespace)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        self.log.emit(
            twisted_level(record.levelno), "{logger}: {message}", logger=record.name, message=message,
        )


def route_pymodbus_logs(name: str = "pymodbus") -> TwistedLogHandler:
    """Install the handler on logger C{name} once (later calls return it); safe from any thread."""
    logger = logging.getLogger(name)
    with _lock:
        for handler in logger.handlers:
            if isinstance(handler, TwistedLogHandler):
                return handler
        handler = TwistedLogHandler(name)
        logger.addHandler(handler)
        logger.propagate = False
        return handler


__all__ = ["TwistedLogHandler", "route_pymodbus_logs", "twisted_level"]
