"""hvac_push.ops.tap's security and limit options (hvac_push.transport.auth, .limits, .web): validated into
one-line usage errors, and working under twistd."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from hvac_push.transport.auth import JWTVerifier, StaticTokens, hash_token
from hvac_push.transport.limits import DEFAULT_LIMITS
from hvac_push.transport.web import GuardedSite
from hvac_push.ops.tap import Options, makeService
from tests.wsprobe import bound_ports, first_messages

ROOT = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).with_name("twistd"))


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


@pytest.fixture
def files(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"q" * 40 + b"\n")
    key = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "es.pub"
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\nsha256 = "{hash_token("a-static-token-0123456789")}"\npoints = ["#"]\n')
    return {"secret": str(secret), "public": str(public), "tokens": str(tokens), "key": key, "dir": tmp_path}


def test_defaults_turn_auth_off_and_set_the_documented_limits():
    options = parse()
    assert options["authenticator"] is None and options["limits"] == DEFAULT_LIMITS
    service = makeService(options, reactor=MemoryReactorClock())
    assert service.factory.authenticator is None and service.factory.limits == DEFAULT_LIMITS
    site = service.site()
    assert isinstance(site, GuardedSite) and site.handshake_timeout == 10.0


def test_auth_and_limit_options_reach_the_factory(files):
    options = parse(
        "--auth-jwt-public-key-file", files["public"], "--auth-audience", "hvac", "--auth-token-file", files["tokens"],
        "--max-message-size", "2048", "--client-rate", "7", "--client-burst", "9", "--max-connections-per-ip", "3",
        "--handshake-timeout", "2.5", "--max-subscriptions", "12", "--send-buffer", "0", "--slow-client-timeout", "0",
    )
    service = makeService(options, reactor=MemoryReactorClock())
    factory = service.factory
    assert factory.authenticator is not None
    static, signed = factory.authenticator.verifiers
    assert isinstance(static, StaticTokens) and isinstance(signed, JWTVerifier)
    assert signed.algorithm == "ES256" and signed.audience == "hvac"
    limits = factory.limits
    assert (limits.max_message_size, limits.client_rate, limits.client_burst, limits.max_connections_per_ip,
            limits.handshake_timeout, limits.max_subscriptions, limits.send_buffer, limits.slow_client_timeout) == (
        2048, 7.0, 9, 3, 2.5, 12, 0, 0.0)
    assert factory.maxMessagePayloadSize == 2048 and factory.openHandshakeTimeout == 2.5
    assert parse("--auth-jwt-secret-file", files["secret"])["authenticator"].verifiers[0].algorithm == "HS256"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--auth-jwt-secret-file", "/nonexistent/secret"], "--auth-jwt-secret-file: /nonexistent/secret: No such file"),
        (["--auth-jwt-public-key-file", "{secret}"], "not a PEM public key"),
        (["--auth-jwt-secret-file", "{secret}", "--auth-jwt-public-key-file", "{public}"], "give one, not both"),
        (["--auth-jwt-secret-file", "{secret}", "--auth-jwt-algorithm", "ES256"], "signs HS256 tokens"),
        (["--auth-jwt-public-key-file", "{public}", "--auth-jwt-algorithm", "RS256"], "cannot check RS256"),
        (["--auth-jwt-algorithm", "HS512"], "--auth-jwt-algorithm: expected one of HS256, RS256, ES256"),
        (["--auth-audience", "x"], "--auth-audience: needs --auth-jwt-secret-file"),
        (["--auth-token-file", "{public}"], "--auth-token-file:"),
        (["--max-message-size", "10"], "--max-message-size: must be between 125"),
        (["--client-rate", "lots"], "--client-rate: expected a number"),
        (["--max-connections-per-ip", "-1"], "--max-connections-per-ip: must be between 0"),
        (["--handshake-timeout", "0"], "--handshake-timeout: must be between 0.1"),
    ],
)
def test_bad_values_are_one_line_usage_errors(files, argv, message):
    argv = [a.format(**files) for a in argv]
    with pytest.raises(usage.UsageError) as e:
        parse(*argv)
    assert message in str(e.value) and "\n" not in str(e.value)


def _status(port: int, headers: str = "", path: str = "/ws") -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n".encode()
        )
        return sock.recv(4096).split(b"\r\n", 1)[0].decode()


@pytest.mark.slow
def test_twistd_with_tokens_refuses_strangers_and_serves_holders(files):
    tok = jwt.encode({"points": ["plant/chiller-1/#"], "exp": int(time.time()) + 300}, files["key"], algorithm="ES256")
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "hvacpush", "--listen", "tcp:0:interface=127.0.0.1", "--sim-units", "3",
         "--port-file", str(files["dir"] / "ports"),
         "--auth-jwt-public-key-file", files["public"], "--auth-token-file", files["tokens"]],
        cwd=files["dir"], env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        [port] = bound_ports(files["dir"] / "ports", alive=lambda: process.poll() is None)
        [snapshot] = first_messages(port, count=1, path=f"/ws?token={tok}")
        assert {pid.split("/")[1] for pid in snapshot["points"]} == {"chiller-1"}
        [snapshot] = first_messages(port, count=1, path="/ws?token=a-static-token-0123456789")
        assert len(snapshot["points"]) == 21
        assert _status(port).startswith("HTTP/1.1 401")
        assert _status(port, f"Authorization: Bearer {tok[:-4]}abcd\r\n").startswith("HTTP/1.1 401")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output
    assert tok not in output and "a-static-token-0123456789" not in output
