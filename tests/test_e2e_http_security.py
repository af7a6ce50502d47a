"""hvac_push.transport.web and hvac_push.transport.tls: what any HTTP client gets, over real sockets.

Security headers on every answer, hostile paths answered 404 without a
traceback, an access log that never holds a token, and the TLS policy of
C{ssl:} listeners (forward secrecy and AEAD only on TLS 1.2).
"""

from __future__ import annotations

import datetime
import http.client
import ssl
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from hvac_push.transport.tls import MODERN_CIPHERS, server_endpoint
from hvac_push.transport.web import redact_uri
from tests.helpers import within
from tests.logwatch import watch_log


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A blocking GET that sends C{path} exactly as given (run it in a thread)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


async def fetch(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    from twisted.internet.threads import deferToThread

    return await within(10, deferToThread(get, port, path, headers))


@pytest.mark.parametrize("path", ["/", "/healthz", "/metrics", "/static/app.js", "/no-such-page"])
@pytest_twisted.ensureDeferred
async def test_every_answer_carries_the_security_headers(server, path):
    status, headers, _ = await fetch(server.port, path)
    assert status in (200, 404)
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'self'" in csp and "default-src 'self'" in csp
    assert headers["x-frame-options"] == "SAMEORIGIN"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["server"] == "hvac-push"  # no version for an attacker to match


@pytest.mark.parametrize("path", ["/static/app.js%00.txt", "/static/%00", "/static/..%2f..%2fsetup.py", "/static/%ff%fe"])
@pytest_twisted.ensureDeferred
async def test_hostile_static_paths_are_404_without_a_traceback(server, path):
    with watch_log() as log:
        status, _, body = await fetch(server.port, path)
        again, _, _ = await fetch(server.port, "/healthz")
    assert status == 404, body
    assert again == 200  # the server goes on serving
    assert log.failures() == []


@pytest_twisted.ensureDeferred
async def test_a_token_in_the_query_of_a_wrong_path_never_reaches_the_access_log(server):
    secret = "Tk-9f3a-never-log-me"
    with watch_log() as log:
        status, _, _ = await fetch(
            server.port, f"/stream?points=plant/%2B/x&token={secret}&access_token={secret}",
            headers={"Referer": f"http://scada.example/page?token={secret}"},
        )
        await fetch(server.port, "/healthz")  # the access log line of the first request is written by now
    assert status == 404
    text = log.text()
    assert "/stream?points=plant/%2B/x&token=***&access_token=***" in text  # the line is there, redacted
    assert secret not in text


def test_redaction_keeps_the_rest_of_the_uri():
    assert redact_uri(b"/ws?points=a/%2B/c&token=abc&x=1") == b"/ws?points=a/%2B/c&token=***&x=1"
    assert redact_uri(b"/ws?TOKEN=abc;password=p") == b"/ws?TOKEN=***;password=***"
    assert redact_uri(b"/ws?mytoken=abc") == b"/ws?mytoken=abc"  # only whole parameter names
    assert redact_uri(b"/healthz") == b"/healthz"


# -- TLS ------------------------------------------------------------------------


def rsa_self_signed(tmp_path: Any) -> tuple[Any, Any]:
    """An RSA key and certificate for 127.0.0.1: RSA allows the plain-RSA suites the policy must refuse."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hvac-push test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def handshake(port: int, cipher: str | None, version: ssl.TLSVersion) -> str:
    """A TLS handshake pinned to one TLS 1.2 suite (or TLS 1.3); the suite agreed, or the error's name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    if cipher is not None:
        context.set_ciphers(cipher)
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                agreed = tls.cipher()
                return agreed[0] if agreed else "none"
        except ssl.SSLError as e:
            return f"refused: {e.reason}"


@pytest_twisted.ensureDeferred
async def test_tls_12_takes_only_forward_secret_aead_suites_and_tls_13_works(tmp_path):
    from twisted.internet.address import IPv4Address
    from twisted.internet.defer import maybeDeferred
    from twisted.internet.threads import deferToThread
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    key_path, cert_path = rsa_self_signed(tmp_path)
    description = f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"
    port = await server_endpoint(reactor(), description).listen(Site(Resource()))
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    number = address.port
    try:
        async def attempt(cipher: str | None, version: ssl.TLSVersion) -> str:
            return str(await within(10, deferToThread(handshake, number, cipher, version)))

        v12 = ssl.TLSVersion.TLSv1_2
        assert await attempt("ECDHE-RSA-AES128-GCM-SHA256", v12) == "ECDHE-RSA-AES128-GCM-SHA256"
        assert await attempt("ECDHE-RSA-CHACHA20-POLY1305", v12) == "ECDHE-RSA-CHACHA20-POLY1305"
        for weak in ("AES128-GCM-SHA256", "AES256-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384"):
            assert (await attempt(weak, v12)).startswith("refused"), weak
        assert (await attempt(None, ssl.TLSVersion.TLSv1_3)).startswith("TLS_")
    finally:
        await maybeDeferred(port.stopListening)


def test_a_cipher_string_openssl_cannot_use_is_a_clear_error(tmp_path):
    from twisted.internet.testing import MemoryReactor

    key_path, cert_path = rsa_self_signed(tmp_path)
    description = f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"
    with pytest.raises(ValueError, match="TLS ciphers 'NO-SUCH-CIPHER'"):
        server_endpoint(MemoryReactor(), description, "NO-SUCH-CIPHER")
    assert "ECDHE" in MODERN_CIPHERS


def test_tls_ciphers_option_defaults_to_the_policy_and_refuses_what_openssl_cannot_use():
    from twisted.internet.testing import MemoryReactorClock
    from twisted.python import usage

    from hvac_push.ops.tap import Options, makeService

    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
    assert makeService(options, reactor=MemoryReactorClock()).tls_ciphers == MODERN_CIPHERS
    twisted_defaults = Options()
    twisted_defaults.parseOptions(["--tls-ciphers", "twisted"])
    assert makeService(twisted_defaults, reactor=MemoryReactorClock()).tls_ciphers is None
    with pytest.raises(usage.UsageError, match=r"^--tls-ciphers: OpenSSL selects no cipher from 'NOPE'$"):
        Options().parseOptions(["--tls-ciphers", "NOPE"])


@pytest_twisted.ensureDeferred
async def test_private_status_keeps_metrics_and_health_details_for_token_holders():
    import json
    import time

    import jwt

    from hvac_push.transport.auth import Authenticator, JWTVerifier
    from tests.conftest import start_server, stop_server

    secret = b"m" * 48
    running = await start_server(authenticator=Authenticator([JWTVerifier(secret, "HS256")]), private_status=True)
    try:
        good = jwt.encode({"points": ["#"], "exp": int(time.time() + 60)}, secret, algorithm="HS256")
        bad = jwt.encode({"points": ["#"], "exp": int(time.time() + 60)}, b"x" * 48, algorithm="HS256")
        status, headers, body = await fetch(running.port, "/metrics")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert (await fetch(running.port, "/metrics", {"Authorization": f"Bearer {bad}"}))[0] == 401
        status, _, body = await fetch(running.port, "/metrics", {"Authorization": f"Bearer {good}"})
        assert status == 200 and b"hvacpush_clients" in body
        # A load balancer still gets readiness, and nothing else.
        status, _, body = await fetch(running.port, "/healthz")
        assert status == 200 and json.loads(body) == {"ready": True}
        status, _, body = await fetch(running.port, "/healthz", {"Authorization": f"Bearer {good}"})
        assert status == 200 and "epoch" in json.loads(body) and "producers" in json.loads(body)
    finally:
        await stop_server(running)


def test_private_status_without_any_token_option_is_a_one_line_error():
    from twisted.python import usage

    from hvac_push.ops.tap import Options

    with pytest.raises(usage.UsageError, match=r"^--private-status: needs a token option"):
        Options().parseOptions(["--private-status"])
