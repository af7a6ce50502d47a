"""Log output for twistd: JSON lines on standard output.

hvac-push logs through C{twisted.logger} only, and never per message: the
delivery path counts (see L{hvac_push.ops.metrics}) instead of logging.

twistd chooses its log observer itself, from its own C{--logger} option, *after*
the plugin has built its service; so the JSON format is an observer factory
that twistd calls:

    twistd -n hvacpush --log-format json              # our option, which selects:
    twistd -n --logger hvac_push.ops.logs.json_observer hvacpush

Each event is one line of JSON (no RFC 7464 record separator), as log
shippers such as journald, Vector or Fluent Bit expect. Events keep their
C{log_format} and fields; L{json_observer} adds C{"text"} (the formatted
message), C{"level"} and C{"time"} (ISO 8601, UTC) so that lines read well
without Twisted.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    eventAsJSON,
    formatEvent,
)

#: The value of twistd's C{--logger} that C{--log-format json} selects.
JSON_OBSERVER = "hvac_push.ops.logs.json_observer"


def _json_line(event: LogEvent) -> str | None:
    enriched = dict(event)
    level = event.get("log_level")
    enriched["level"] = getattr(level, "name", None)
    enriched["text"] = formatEvent(event)
    when = event.get("log_time")
    if when is not None:
        enriched["time"] = datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")
    failure = event.get("log_failure")
    if failure is not None:
        enriched["traceback"] = failure.getTraceback()
    return eventAsJSON(enriched) + "\n"


def json_file_observer(output: IO[Any]) -> ILogObserver:
    """A C{twisted.logger} observer writing one JSON object per line to C{output}."""
    return FileLogObserver(output, _json_line)


def json_observer() -> ILogObserver:
    """The observer factory for twistd's C{--logger}: JSON lines on standard output.

    twistd calls it before it redirects C{sys.stdout} into the log, so the
    observer keeps the real standard output.
    """
    return json_file_observer(sys.stdout)


__all__ = ["JSON_OBSERVER", "json_file_observer", "json_observer"]
