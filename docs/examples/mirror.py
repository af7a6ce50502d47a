import asyncio
import sys

from hvac_push.client import Mirror


async def main(url: str) -> None:
    async with Mirror(url, points=["plant/#"]) as plant:
        async for change in plant.changes():
            print(change.point_id, change.value, change.unit, change.status)

asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://localhost:8080/ws"))
