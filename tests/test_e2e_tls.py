"""hvac_push.ops.service behind a TLS listener (wss://), end to end: a certificate made by the test, and a real
Autobahn client that trusts it."""

from __future__ import annotations

import datetime
import json
import ipaddress

import jwt
import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hvac_push.transport.auth import Authenticator, JWTVerifier
from hvac_push.core.points import EVERYTHING, Sample
from hvac_push.testing import PushClient, connect
from hvac_push.transport.wire import encode_point
from tests.conftest import RunningServer, stop_server
from tests.helpers import eventually, within


def reactor():
    from twisted.internet import reactor

    return reactor


def self_signed(tmp_path):
    """A key and a certificate for IP 127.0.0.1, valid for a day; returns (key path, cert path, cert PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hvac-push test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(cert_pem)
    return key_path, cert_path, cert_pem


async def start_tls_server(tmp_path, **options):
    from twisted.internet.endpoints import serverFromString

    from hvac_push.ops.service import PushService

    key_path, cert_path, cert_pem = self_signed(tmp_path)
    service = PushService(reactor(), interval=0.05, **options)
    service.startService()
    description = f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"
    port = await serverFromString(reactor(), description).listen(service.site())
    return RunningServer(service, port), cert_pem


def trusting(cert_pem):
    from twisted.internet.ssl import Certificate, optionsForClientTLS

    return optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(cert_pem))


class StateClient(PushClient):
    """Keeps the points it was sent, merged: snapshot plus updates."""

    def __init__(self) -> None:
        super().__init__()
        self.view: dict[str, dict] = {}
        self.seen_version = 0

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        super().onMessage(payload, isBinary)
        import json

        message = json.loads(payload)
        if message.get("type") in ("snapshot", "update"):
            self.view.update(message["points"])
            self.seen_version = message["version"]


@pytest_twisted.ensureDeferred
async def test_wss_clients_get_exactly_the_hubs_state(tmp_path):
    running, cert_pem = await start_tls_server(tmp_path)
    try:
        hub = running.hub
        hub.publish(Sample("plant/chiller-1/supply_temp", 7.0, "°C", 1.0))
        client = await within(10, connect(reactor(), running.port, tls=trusting(cert_pem), client=StateClient))
        [proto] = running.factory.clients
        assert proto.direct_socket is None  # the raw-socket fast path is for plain TCP only
        for round_ in range(40):
            hub.publish_many(
                [Sample(f"plant/unit-{i}/temp", round_ * 0.5 + i, "°C", 2.0 + round_) for i in range(25)]
            )
            if round_ % 8 == 0:
                await eventually(lambda: client.seen_version == hub.version)
        await eventually(lambda: client.seen_version == hub.version)
        expected = {p.point_id: encode_point(p) for p in hub.points(EVERYTHING)}
        assert client.view == expected and len(expected) == 26
        client.sendClose()
        await within(5, client.closed)
    finally:
        await stop_server(running)


@pytest_twisted.ensureDeferred
async def test_wss_with_a_token_and_an_untrusted_client_is_refused(tmp_path):
    secret = b"t" * 40
    running, cert_pem = await start_tls_server(
        tmp_path, authenticator=Authenticator([JWTVerifier(secret, "HS256")])
    )
    try:
        tok = jwt.encode({"points": ["plant/#"], "exp": 4102444800}, secret, algorithm="HS256")
        client = await within(10, connect(
            reactor(), running.port, tls=trusting(cert_pem), protocols=["hvac-push.v1", f"bearer.{tok}"]))
        assert (await within(5, client.next()))["type"] == "snapshot"
        assert client.websocket_protocol_in_use == "hvac-push.v1"
        client.sendClose()
        await within(5, client.closed)

        # A client that does not trust the certificate never gets a WebSocket: its TLS handshake fails
        # on certificate verification (not a timeout, not a refused connection).
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            await within(10, connect(reactor(), running.port, tls=trusting(_other_cert())))
        await eventually(lambda: not running.factory.connections)
    finally:
        await stop_server(running)


def _other_cert() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest_twisted.ensureDeferred
async def test_a_snapshot_above_the_fragment_threshold_arrives_whole_over_wss_while_updates_flow(tmp_path):
    """The fragmented path (written as TLS takes each fragment) loses nothing and never stalls."""
    from twisted.internet.task import LoopingCall

    from hvac_push.transport.streaming import STREAM_THRESHOLD

    running, cert_pem = await start_tls_server(tmp_path)
    hub = running.hub
    hub.publish_many([Sample(f"plant/unit-{i // 7}/p{i % 7}", float(i), "°C", 1.0) for i in range(6000)])
    changing = [f"plant/unit-{k}/p0" for k in range(0, 800, 80)]
    rounds = {"n": 0}

    def publish() -> None:
        rounds["n"] += 1
        hub.publish_many([Sample(p, 1000.0 + rounds["n"], "°C", 2.0 + rounds["n"]) for p in changing])

    publisher = LoopingCall(publish)
    publisher.clock = reactor()
    finished = publisher.start(0.01, now=False)
    try:
        client = await within(10, connect(reactor(), running.port, tls=trusting(cert_pem), client=StateClient))
        [proto] = running.factory.clients
        assert proto.direct_socket is None and proto.fragments_allowed()
        await eventually(lambda: rounds["n"] >= 30, timeout=20)
        publisher.stop()
        await finished
        await eventually(lambda: client.seen_version == hub.version, timeout=20)
        expected = {p.point_id: encode_point(p) for p in hub.points(EVERYTHING)}
        assert client.view == expected and len(expected) == 6000
        assert len(json.dumps({"points": expected})) > STREAM_THRESHOLD  # so it went in fragments
        client.sendClose()
        await within(5, client.closed)
    finally:
        if publisher.running:
            publisher.stop()
        await stop_server(running)
