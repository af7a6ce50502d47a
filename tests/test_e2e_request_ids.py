"""Request ids over a real socket: every direct answer echoes the C{id} of the message it answers,
errors included, and nothing the client did not ask for carries one."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from hvac_push.core.points import AlarmLimits, Pattern, Sample
from hvac_push.testing import PushClient, connect
from hvac_push.transport.auth import AuthError, Authenticator, Permissions
from tests.conftest import start_server, stop_server
from tests.helpers import within

T = "plant/chiller-1/supply_temp"
HIGH = f"{T}:high"


def reactor():
    from twisted.internet import reactor

    return reactor


class Supervisor:
    """One token that may read everything under C{plant/}, acknowledge and shelve."""

    def verify(self, token: str) -> Permissions:
        if token == "sup":
            return Permissions((Pattern.parse("plant/#"),), may_ack=True, may_shelve=True, subject="sam")
        raise AuthError("invalid token")


async def answer(client: PushClient, kind: str) -> dict[str, Any]:
    """The next message of type C{kind}; whatever the server pushed on the way must carry no C{id}."""
    while True:
        message = await within(5, client.next())
        if message["type"] == kind:
            return message
        assert "id" not in message, message


async def ask(client: PushClient, request: dict[str, Any], kind: str) -> dict[str, Any]:
    client.send_json(request)
    return await answer(client, kind)


@pytest_twisted.ensureDeferred
async def test_every_answer_echoes_the_id_of_its_request_and_pushed_messages_carry_none() -> None:
    server = await start_server(authenticator=Authenticator([Supervisor()]))
    client = None
    try:
        server.service.set_alarm_limits(T, AlarmLimits(high=9.0))
        server.hub.publish(Sample(T, 7.0, "°C"))
        client = await within(5, connect(reactor(), server.port, "/ws?points=plant/chiller-1/%23",
                                         headers={"Authorization": "Bearer sup"}))
        opening = await answer(client, "snapshot")
        assert "id" not in opening
        server.hub.publish(Sample(T, 9.5, "°C"))
        raised = await answer(client, "alarm")
        assert raised["alarm"]["id"] == HIGH

        snapshot = await ask(client, {"type": "subscribe", "points": ["plant/ahu-1/+"], "id": "sub-1"}, "snapshot")
        assert snapshot["id"] == "sub-1" and snapshot["type"] == "snapshot"
        resumed = await ask(client, {"type": "resume", "since": opening["version"], "epoch": opening["epoch"],
                                     "alarm_seq": raised["seq"], "id": 2}, "update")
        assert resumed["id"] == 2 and T in resumed["points"]
        resync = await ask(client, {"type": "resume", "since": 0, "epoch": "elsewhere", "id": 2.5}, "snapshot")
        assert resync["id"] == 2.5 and resync["resync"] is True
        history = await ask(client, {"type": "history", "point": T, "since": 0, "id": "h"}, "history")
        assert history["id"] == "h" and [s[1] for s in history["samples"]] == [7.0, 9.5]

        # The ack's confirmation echoes the id; the transition every client gets does not carry it.
        client.send_json({"type": "ack", "alarm": HIGH, "id": "ack-7"})
        got: dict[str, dict[str, Any]] = {}
        while len(got) < 2:
            message = await within(5, client.next())
            if message["type"] in ("acked", "alarm"):
                got[message["type"]] = message
        assert got["acked"] == {"id": "ack-7", "type": "acked", "alarm": HIGH}
        assert "id" not in got["alarm"] and got["alarm"]["alarm"]["state"] == "acknowledged"

        shelved = await ask(client, {"type": "shelve", "alarm": HIGH, "minutes": 5, "id": "sh"}, "shelved")
        assert shelved["id"] == "sh" and shelved["until"] is not None
        unshelved = await ask(client, {"type": "unshelve", "alarm": HIGH, "id": "un"}, "shelved")
        assert unshelved["id"] == "un" and unshelved["until"] is None
        oos = await ask(client, {"type": "out_of_service", "point": T, "on": True, "id": 11}, "out_of_service")
        assert oos == {"id": 11, "type": "out_of_service", "point": T, "on": True}
        back = await ask(client, {"type": "out_of_service", "point": T, "on": False, "id": 12}, "out_of_service")
        assert back["id"] == 12 and back["on"] is False
        authenticated = await ask(client, {"type": "auth", "token": "sup", "id": "tok"}, "authenticated")
        assert authenticated["id"] == "tok" and authenticated["ack"] is True
        assert (await ask(client, {"type": "ping", "id": "p"}, "pong")) == {"type": "pong", "id": "p"}

        # Errors echo the id: a message the parser refuses, and one a handler refuses.
        error = await ask(client, {"type": "subscribe", "points": ["plant/#"], "deadbnd": 1, "id": "typo"}, "error")
        assert (error["id"], error["error"]) == ("typo", "unknown_field")
        error = await ask(client, {"type": "ack", "alarm": "plant/nowhere/x:high", "id": 13}, "error")
        assert (error["id"], error["error"]) == (13, "unknown_alarm")
        error = await ask(client, {"id": "no-type"}, "error")
        assert (error["id"], error["error"]) == ("no-type", "bad_message")
        error = await ask(client, {"type": "unsubscribe", "points": ["plant/boiler-9/#"], "id": "u"}, "error")
        assert (error["id"], error["error"]) == ("u", "not_subscribed")
        # An id that cannot be echoed, or no JSON at all: an error without one.
        error = await ask(client, {"type": "ping", "id": {"nested": 1}}, "error")
        assert error["error"] == "bad_message" and "id" not in error
        client.sendMessage(b"{not json")
        error = await answer(client, "error")
        assert error["error"] == "bad_json" and "id" not in error
        error = await ask(client, {"type": "ping", "id": "x" * 129}, "error")
        assert error["error"] == "bad_message" and "id" not in error

        # A successful unsubscribe has no answer; the next ping is answered, and no error came first.
        client.send_json({"type": "unsubscribe", "points": ["plant/ahu-1/+"], "id": "u2"})
        assert (await ask(client, {"type": "ping", "id": "after"}, "pong"))["id"] == "after"
        client.sendClose()
        await within(5, client.closed)
    finally:
        await stop_server(server)
