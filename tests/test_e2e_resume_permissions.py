"""hvac_push.transport.protocol: what a resumed client is replayed is limited by its token and subscription."""

from __future__ import annotations

import time

import jwt
import pytest_twisted

from hvac_push.core.points import AlarmLimits, PointMeta, Sample
from hvac_push.testing import connect
from hvac_push.transport.auth import Authenticator, JWTVerifier
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, within

SECRET = b"r" * 48
MINE = "plant/ahu-1/supply_temp"
NOT_MINE = "plant/chiller-1/supply_temp"


def reactor():
    from twisted.internet import reactor

    return reactor


def token(points: list[str]) -> str:
    return jwt.encode({"points": points, "exp": int(time.time() + 60)}, SECRET, algorithm="HS256")


@pytest_twisted.ensureDeferred
async def test_a_resumed_client_is_never_replayed_alarms_for_points_its_token_may_not_read():
    running = await start_server(authenticator=Authenticator([JWTVerifier(SECRET, "HS256")]))
    try:
        hub = running.hub
        for point_id in (MINE, NOT_MINE):
            hub.configure(point_id, PointMeta(limits=AlarmLimits(high=10.0)))
            hub.publish(Sample(point_id, 5.0, "°C", 1.0))
        epoch, version, seq = hub.epoch, hub.version, running.service.alarms.seq
        # While the client is away, both points go into alarm.
        hub.publish_many([Sample(MINE, 30.0, "°C", 2.0), Sample(NOT_MINE, 30.0, "°C", 2.0)])
        await eventually(lambda: running.service.alarms.seq >= seq + 2)
        headers = {"Authorization": f"Bearer {token(['plant/ahu-1/#'])}"}
        client = await within(5, connect(
            reactor(), running.port, f"/ws?since={version}&epoch={epoch}&alarm_seq={seq}", headers=headers,
        ))
        update = await within(5, client.next("update"))
        assert set(update["points"]) == {MINE}
        replayed = await within(5, client.next("alarm"))
        assert replayed["alarm"]["point"] == MINE
        client.send_json({"type": "ping", "id": 1})
        rest = []
        while True:
            message = await within(5, client.next())
            if message["type"] == "pong":
                break
            rest.append(message)
        assert all(m.get("alarm", {}).get("point") != NOT_MINE for m in rest), rest
        client.sendClose()
        await within(5, client.closed)
    finally:
        await stop_server(running)
