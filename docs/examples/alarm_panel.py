"""A small alarm panel: a filtered mirror, callbacks, acknowledging, history.

    python alarm_panel.py ws://localhost:8080/ws --ack --seconds 30
    HVAC_PUSH_TOKEN=... python alarm_panel.py wss://scada.example/ws
"""

from __future__ import annotations

import argparse
import asyncio
import os

from hvac_push.client import AlarmChange, Filter, Mirror, PointChange


def show_alarm(change: AlarmChange) -> None:
    alarm = change.alarm
    if alarm is None or not alarm.listed:
        print(f"cleared  {change.alarm_id}")
    else:
        print(f"{alarm.state:<12} {alarm.severity:<8} {alarm.message}")


def show_fault(change: PointChange) -> None:
    if change.status not in ("ok", None):  # stale, fault, or what a later server adds
        print(f"status   {change.point_id} is {change.status}")


async def main(url: str, ack: bool, seconds: float) -> None:
    async with Mirror(
        url,
        points=["+/+/supply_temp", "+/+/return_temp"],
        filter=Filter(deadband=0.2, min_interval=1.0),  # temperatures: only moves worth showing
        token=os.environ.get("HVAC_PUSH_TOKEN"),
    ) as plant:
        print(f"{len(plant.points)} temperatures, {len(plant.alarms)} alarms listed")
        plant.on_alarm(show_alarm)
        plant.on_change(show_fault)
        for alarm in list(plant.alarms.values()):
            show_alarm(AlarmChange(alarm.id, alarm))
            samples = await plant.history(alarm.point, since=0)
            print(f"         last {len(samples)} samples of {alarm.point}: {[v for _, v in samples[-3:]]}")
            if ack and alarm.needs_ack:
                await plant.ack(alarm.id)  # the transition arrives through on_alarm
        await asyncio.sleep(seconds)
        print(f"round trip {await plant.ping() * 1000:.1f} ms; up to date with version {plant.version}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", default="ws://localhost:8080/ws")
    parser.add_argument("--ack", action="store_true", help="acknowledge every alarm that needs it")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to watch")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.ack, args.seconds))
