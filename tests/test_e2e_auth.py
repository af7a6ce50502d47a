"""hvac_push.transport.auth as hvac_push.transport.protocol applies it, over real sockets: 401 at the handshake,
grants, expiry, refresh."""

from __future__ import annotations

import time

import jwt
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec

from hvac_push.transport.auth import Authenticator, JWTVerifier, StaticTokens, hash_token
from hvac_push.core.points import Sample
from hvac_push.testing import connect, handshake_status
from tests.conftest import start_server, stop_server
from tests.helpers import eventually, sleep, within
from tests.logwatch import watch_log
from tests.nbsock import RawSocket

SECRET = b"k" * 48
EC_KEY = ec.generate_private_key(ec.SECP256R1())
STATIC = "static-token-for-the-panel-0123456789"
POINTS = [
    Sample("plant/chiller-1/supply_temp", 6.5, "°C", 1.0),
    Sample("plant/chiller-1/power", 80.0, "kW", 1.0),
    Sample("plant/ahu-1/supply_temp", 14.0, "°C", 1.0),
    Sample("plant/ahu-1/fan_speed", 55.0, "%", 1.0),
]


def reactor():
    from twisted.internet import reactor

    return reactor


def token(points=("#",), ttl=60.0, key=SECRET, algorithm="HS256", **claims):
    return jwt.encode({"points": list(points), "exp": int(time.time() + ttl), **claims}, key, algorithm=algorithm)


def bearer(tok):
    return {"Authorization": f"Bearer {tok}"}


async def auth_server(tmp_path, **options):
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[token]]\nname = "panel"\nsha256 = "{hash_token(STATIC)}"\npoints = ["plant/ahu-1/#"]\nack = true\n'
    )
    authenticator = Authenticator([StaticTokens.load(str(tokens)), JWTVerifier(SECRET, "HS256")])
    running = await start_server(authenticator=authenticator, **options)
    running.hub.publish_many(POINTS)
    return running


async def closed(client):
    client.sendClose()
    await within(5, client.closed)


@pytest_twisted.ensureDeferred
async def test_missing_bad_and_expired_tokens_get_401_before_the_upgrade(tmp_path):
    running = await auth_server(tmp_path)
    r = reactor()
    try:
        cases = [
            {},
            bearer("nonsense"),
            bearer(token(key=b"w" * 48)),
            bearer(token(ttl=-30)),
            {"Authorization": "Basic dXNlcjpwYXNz"},
            bearer(token(points=[])),
        ]
        for headers in cases:
            assert await within(5, handshake_status(r, running.port, headers=headers)) == 401, headers
        assert await within(5, handshake_status(r, running.port, "/ws?token=nonsense")) == 401
        raw = RawSocket(running.port)
        assert await raw.upgrade() == 401
        assert 'WWW-Authenticate: Bearer realm="hvac-push"' in raw.response_head
        assert "invalid_token" not in raw.response_head  # no token was presented
        await raw.wait_closed()
        raw.close()
        raw = RawSocket(running.port)
        assert await raw.upgrade(headers=bearer(token(ttl=-30))) == 401
        assert "401 token expired" in raw.response_head and 'error="invalid_token"' in raw.response_head
        raw.close()
        assert running.factory.stats.handshakes_denied[401] == 9
        assert not running.factory.clients
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_a_token_from_the_header_the_query_or_a_subprotocol_admits(tmp_path):
    running = await auth_server(tmp_path)
    r = reactor()
    try:
        chiller = token(["plant/chiller-1/#"])
        no_protocols: tuple[str, ...] = ()
        for path, headers, protocols in (
            ("/ws", bearer(chiller), no_protocols),
            (f"/ws?token={chiller}", None, no_protocols),
            ("/ws", None, ("hvac-push.v1", f"bearer.{chiller}")),
        ):
            client = await within(5, connect(r, running.port, path, headers=headers, protocols=protocols))
            snapshot = await within(5, client.next("snapshot"))
            assert set(snapshot["points"]) == {"plant/chiller-1/supply_temp", "plant/chiller-1/power"}
            if protocols:
                assert client.websocket_protocol_in_use == "hvac-push.v1"  # never the token
            await closed(client)
        # The static token and an ES256 token work the same way.
        client = await within(5, connect(r, running.port, headers=bearer(STATIC)))
        assert set((await within(5, client.next("snapshot")))["points"]) == {
            "plant/ahu-1/supply_temp", "plant/ahu-1/fan_speed"}
        [proto] = running.factory.clients
        assert proto.permissions.may_ack and proto.permissions.subject == "panel"
        assert proto.may_ack() and proto.may_read("plant/ahu-1/x") and not proto.may_read("plant/chiller-1/power")
        await closed(client)
        # Only the token offered as a subprotocol: admitted, and no subprotocol is selected.
        raw = RawSocket(running.port)
        assert await raw.upgrade(headers={"Sec-WebSocket-Protocol": f"bearer.{chiller}"}) == 101
        assert "sec-websocket-protocol" not in raw.response_head.lower()
        raw.close()
        raw = RawSocket(running.port)
        assert await raw.upgrade(headers={"Sec-WebSocket-Protocol": f"hvac-push.v1, bearer.{chiller}"}) == 101
        assert "Sec-WebSocket-Protocol: hvac-push.v1\r\n" in raw.response_head + "\r\n"
        assert chiller not in raw.response_head
        raw.close()
        await eventually(lambda: not running.factory.connections)
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_public_key_tokens_admit(tmp_path):
    from cryptography.hazmat.primitives import serialization

    pem = tmp_path / "es.pub"
    pem.write_bytes(EC_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    verifier = JWTVerifier.from_files(public_key_file=str(pem), audience="hvac-push")
    running = await start_server(authenticator=Authenticator([verifier]))
    r = reactor()
    try:
        good = token(key=EC_KEY, algorithm="ES256", aud="hvac-push")
        assert await within(5, handshake_status(r, running.port, headers=bearer(good))) == 101
        wrong_aud = token(key=EC_KEY, algorithm="ES256", aud="other")
        assert await within(5, handshake_status(r, running.port, headers=bearer(wrong_aud))) == 401
        hs = token(aud="hvac-push")
        assert await within(5, handshake_status(r, running.port, headers=bearer(hs))) == 401
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_forbidden_points_are_refused_and_never_sent(tmp_path):
    running = await auth_server(tmp_path)
    r = reactor()
    try:
        client = await within(5, connect(
            r, running.port, "/ws?points=plant/ahu-1/%23,plant/chiller-1/power", headers=bearer(token(["plant/chiller-1/#"]))
        ))
        snapshot = await within(5, client.next())
        assert snapshot["type"] == "snapshot" and set(snapshot["points"]) == {"plant/chiller-1/power"}
        error = await within(5, client.next())
        assert error["type"] == "error" and error["error"] == "forbidden" and "plant/ahu-1/#" in error["detail"]

        for patterns in (["#"], ["plant/+/supply_temp"], ["plant/chiller-1/power", "plant/ahu-1/fan_speed"]):
            client.send_json({"type": "subscribe", "points": patterns})
            error = await within(5, client.next())
            assert error["type"] == "error" and error["error"] == "forbidden", error
        # Within the grant: fine.
        client.send_json({"type": "subscribe", "points": ["plant/chiller-1/supply_temp"]})
        added = await within(5, client.next())
        assert added["type"] == "snapshot" and set(added["points"]) == {"plant/chiller-1/supply_temp"}

        running.hub.publish_many([Sample("plant/ahu-1/supply_temp", 15.0, "°C", 2.0)])
        running.hub.publish_many([Sample("plant/chiller-1/power", 81.0, "kW", 2.0)])
        update = await within(5, client.next())
        assert update["type"] == "update" and set(update["points"]) == {"plant/chiller-1/power"}
        assert running.factory.guard.stats.forbidden == 4

        # Default subscription of a restricted token: its grant, not everything.
        narrow = await within(5, connect(r, running.port, headers=bearer(token(["plant/+/fan_speed"]))))
        assert set((await within(5, narrow.next()))["points"]) == {"plant/ahu-1/fan_speed"}
        await closed(narrow)
        await closed(client)
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_the_connection_closes_with_4001_when_the_token_expires(tmp_path):
    running = await auth_server(tmp_path)
    try:
        expires = int(time.time()) + 2
        client = await within(5, connect(reactor(), running.port, headers=bearer(
            jwt.encode({"points": ["#"], "exp": expires}, SECRET, algorithm="HS256"))))
        await within(5, client.next("snapshot"))
        _, code, reason = await within(6, client.closed)
        assert code == 4001 and reason == "token expired"
        assert expires - 0.5 <= time.time() < expires + 3
        assert running.factory.guard.stats.expired_closes == 1
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_an_auth_message_refreshes_the_grant_before_expiry(tmp_path):
    running = await auth_server(tmp_path)
    try:
        client = await within(5, connect(reactor(), running.port, headers=bearer(token(ttl=2))))
        await within(5, client.next("snapshot"))
        client.send_json({"type": "auth", "token": "garbage"})
        error = await within(5, client.next("error"))
        assert error["error"] == "unauthorized"
        fresh = token(["plant/chiller-1/#", "plant/ahu-1/supply_temp"], ttl=60)
        client.send_json({"type": "auth", "token": fresh})
        ok = await within(5, client.next())
        assert ok["type"] == "authenticated" and ok["expires"] > time.time() + 50 and ok["ack"] is False
        # The old subscription (#) is wider than the new grant: it is dropped, and said so.
        dropped = await within(5, client.next())
        assert dropped["error"] == "forbidden" and "#" in dropped["detail"]
        [proto] = running.factory.clients
        assert proto.subscription.key == frozenset()
        client.send_json({"type": "subscribe", "points": ["plant/chiller-1/#"]})
        assert (await within(5, client.next()))["type"] == "snapshot"
        await sleep(2.5)  # past the first token's exp
        client.send_json({"type": "ping", "id": "still-here"})
        assert (await within(5, client.next("pong")))["id"] == "still-here"
        assert not client.closed.called
        await closed(client)
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_auth_message_without_auth_configured_is_an_error(server):
    client = await within(5, connect(reactor(), server.port))
    await within(5, client.next("snapshot"))
    client.send_json({"type": "auth", "token": "x"})
    assert (await within(5, client.next("error")))["error"] == "bad_message"
    client.send_json({"type": "auth", "token": 5})
    assert (await within(5, client.next("error")))["error"] == "bad_message"
    await closed(client)


@pytest_twisted.ensureDeferred
async def test_tokens_never_reach_the_log(tmp_path):
    running = await auth_server(tmp_path)
    r = reactor()
    good = token(["plant/#"])
    expired = token(ttl=-10)
    forged = token(key=b"z" * 48)
    try:
        with watch_log() as log:
            for tok in (good, expired, forged, STATIC, "plain-wrong-token-xyz"):
                await within(5, handshake_status(r, running.port, headers=bearer(tok)))
                await within(5, handshake_status(r, running.port, f"/ws?token={tok}"))
            client = await within(5, connect(r, running.port, headers=bearer(good)))
            client.send_json({"type": "auth", "token": forged})
            await within(5, client.next("error"))
            await closed(client)
        text = log.text()
        assert log.events  # the observer did see the handshakes
        for tok in (good, expired, forged, STATIC, "plain-wrong-token-xyz"):
            assert tok not in text
            assert tok.split(".")[-1] not in text  # not even a signature
        assert not log.failures()
    finally:
        await stop_server(running)
