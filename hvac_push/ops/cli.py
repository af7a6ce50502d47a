"""The C{hvac-push} command (also C{python -m hvac_push}): tail a live stream, check a plant file, hash a token.

    hvac-push tail ws://localhost:8080/ws --points 'plant/+/supply_temp' --count 10
    hvac-push check-config plant.toml
    hvac-push hash-token --generate --name control-room --points 'plant/#' --ack >> tokens.toml

C{check-config} and C{hash-token} delegate to the modules that own them
(L{hvac_push.ops.plant_file.main}, L{hvac_push.transport.auth.main}), whose
C{python -m} entry points keep working.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Sequence, TextIO, cast

from hvac_push.client import (
    AlarmChange,
    ClientError,
    Connected,
    Disconnected,
    Mirror,
    PointChange,
    ServerNotice,
    TokenVia,
)

PROG = "hvac-push"
TOKEN_ENV = "HVAC_PUSH_TOKEN"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Tools for hvac-push: live HVAC telemetry pushed over WebSocket."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tail = commands.add_parser(
        "tail",
        help="print a server's live stream, one line per point change",
        description="Connect to an hvac-push server and print one line per point change (time, point, "
        "value and unit, status) and one per alarm transition, like wscat but decoded. Reconnects and "
        "resumes by itself. Stops after --count point lines, or on Ctrl-C.",
    )
    tail.add_argument("url", metavar="URL", help="ws://HOST:PORT/ws or wss://...")
    tail.add_argument(
        "--points", action="append", metavar="PATTERN",
        help="a subscription pattern, repeatable or comma-separated (default: everything, or all the token grants)",
    )
    tail.add_argument("--count", type=int, metavar="N", help="stop after N point changes")
    tail.add_argument(
        "--token", metavar="TOKEN", default=os.environ.get(TOKEN_ENV),
        help=f"bearer token (default: ${TOKEN_ENV}; the environment keeps it out of the process list)",
    )
    tail.add_argument(
        "--token-via", choices=("header", "subprotocol", "query"), default="header",
        help="where the token goes (default: the Authorization header)",
    )
    tail.add_argument("--no-alarms", action="store_true", help="print point changes only")
    tail.add_argument("--json", action="store_true", help="print each change as one JSON object")
    commands.add_parser(
        "check-config",
        help="check plant files (TOML): every problem, or a summary",
        description="Check hvac-push plant files against the schema (docs/sources.md). Prints every "
        "problem (file, key path, what is wrong) or a one-line summary; exit status 1 if any file has problems.",
    ).add_argument("files", nargs="+", metavar="FILE")
    commands.add_parser(
        "hash-token",
        add_help=False,
        help="print a [[token]] entry for --auth-token-file (see 'hash-token --help')",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["hash-token"]:
        # Same arguments as `python -m hvac_push.transport.auth hash`, parsed there.
        from hvac_push.transport.auth import main as auth_main

        return auth_main(["hash", *args_list[1:]])
    args = _parser().parse_args(args_list)
    if args.command == "check-config":
        from hvac_push.ops.plant_file import main as check_main

        return check_main(args.files)
    patterns = [p for item in args.points for p in item.split(",") if p] if args.points else None
    if args.count is not None and args.count < 1:
        _parser().error("--count must be at least 1")
    try:
        return asyncio.run(
            tail(args.url, patterns, args.count, args.token, cast(TokenVia, args.token_via), not args.no_alarms, args.json)
        )
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`hvac-push tail ... | head`): not an error.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (so the exit flush is quiet)
        return 0


async def tail(
    url: str,
    patterns: list[str] | None,
    count: int | None = None,
    token: str | None = None,
    token_via: TokenVia = "header",
    alarms: bool = True,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print the stream of C{url} until C{count} point changes were printed (or forever)."""
    printed = 0
    try:
        mirror = Mirror(url, patterns, token=token, token_via=token_via)
    except ValueError as e:
        print(f"{PROG} tail: {e}", file=err)
        return 2
    try:
        async with mirror:
            async for event in mirror.events():
                if isinstance(event, PointChange):
                    print(_point_json(event) if as_json else point_line(event), file=out, flush=True)
                    printed += 1
                    if count is not None and printed >= count:
                        return 0
                elif isinstance(event, AlarmChange):
                    if alarms:
                        print(_alarm_json(event) if as_json else alarm_line(event), file=out, flush=True)
                elif isinstance(event, Disconnected):
                    print(f"{PROG} tail: disconnected ({event.code or ''} {event.reason}), reconnecting", file=err)
                elif isinstance(event, Connected) and mirror.connections > 1:
                    how = "resumed" if event.resumed else "resynced"
                    print(f"{PROG} tail: reconnected ({how})", file=err)
                elif isinstance(event, ServerNotice):
                    print(f"{PROG} tail: server says {event.code}: {event.detail}", file=err)
    except ClientError as e:
        print(f"{PROG} tail: {e}", file=err)
        return 1
    except BrokenPipeError:
        raise
    except OSError as e:
        why = "connection refused (is the server running?)" if isinstance(e, ConnectionRefusedError) else str(e)
        print(f"{PROG} tail: cannot connect to {url}: {why}", file=err)
        return 1
    except asyncio.TimeoutError:
        print(f"{PROG} tail: {url} did not answer in time", file=err)
        return 1
    return 0


def _clock(ts: float | None) -> str:
    if ts is None:
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def _value(value: object) -> str:
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def point_line(change: PointChange) -> str:
    """C{10:41:19.123  plant/chiller-1/supply_temp  6.9 °C  ok} (or C{removed})."""
    point = change.point
    if point is None:
        return f"{_clock(None)}  {change.point_id}  removed"
    unit = f" {point.unit}" if point.unit else ""
    return f"{_clock(point.ts)}  {change.point_id}  {_value(point.value)}{unit}  {point.status}"


def alarm_line(change: AlarmChange) -> str:
    """C{10:41:20.500  ALARM plant/chiller-1/supply_temp:high  active  major  <message>}."""
    alarm = change.alarm
    if alarm is None:
        return f"{_clock(None)}  ALARM {change.alarm_id}  cleared"
    return f"{_clock(alarm.ts)}  ALARM {alarm.id}  {alarm.state}  {alarm.severity}  {alarm.message}".rstrip()


def _point_json(change: PointChange) -> str:
    body = None if change.point is None else change.point.to_wire()
    return json.dumps({"point": change.point_id, "state": body}, ensure_ascii=False)


def _alarm_json(change: AlarmChange) -> str:
    alarm = change.alarm
    body = None if alarm is None else {
        "id": alarm.id, "point": alarm.point, "kind": alarm.kind, "state": alarm.state,
        "severity": alarm.severity, "value": alarm.value, "limit": alarm.limit, "ts": alarm.ts,
        "message": alarm.message, **alarm.extra,
    }
    return json.dumps({"alarm": change.alarm_id, "seq": change.seq, "state": body}, ensure_ascii=False)


if __name__ == "__main__":
    raise SystemExit(main())
