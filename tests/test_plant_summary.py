"""C{/plant.json} over a real listener: the overview names each unit's kind as the plant file declares it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import start_server, stop_server
from tests.test_metrics_health import http_get

PLANT = """
[simulator]
units = 1

[units.lab-1]
kind = "{kind}"
source = "simulator"

[units.lab-1.points.supply_air_temp]
unit = "degC"
"""


def kinds_of(body: bytes) -> dict[str, str]:
    return {f"{u['site']}/{u['unit']}": u["kind"] for u in json.loads(body)["units"]}


async def test_the_overview_takes_declared_kinds_and_follows_a_reload(tmp_path: Path) -> None:
    from hvac_push.ops.plant_file import parse_config
    from hvac_push.ops.plant_sources import ConfigReloader

    running = await start_server()
    reloader = ConfigReloader(running.service, parse_config(PLANT.replace("{kind}", "crac"), "plant.toml"))
    try:
        status, _, body = await http_get(running.port, "/plant.json")
        assert status == 200
        kinds = kinds_of(body)
        # lab-1's name says nothing: its kind comes from the file; the simulator's chiller-1 from its name.
        assert kinds["plant/lab-1"] == "crac" and kinds["plant/chiller-1"] == "chiller"
        await reloader.apply(parse_config(PLANT.replace("{kind}", "ahu"), "plant.toml"))
        _, _, body = await http_get(running.port, "/plant.json")
        assert kinds_of(body)["plant/lab-1"] == "ahu"
    finally:
        await stop_server(running)
