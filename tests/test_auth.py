"""hvac_push.transport.auth: tokens, grants and pattern coverage, without sockets (the handshake is in
test_e2e_auth.py)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hvac_push.transport.auth import (
    ALL,
    AuthError,
    Authenticator,
    JWTVerifier,
    Permissions,
    StaticTokens,
    build_authenticator,
    covers,
    hash_token,
    main,
    permissions_from_claims,
    token_from_request,
)
from hvac_push.core.points import Pattern

SECRET = b"s" * 40
ROOT = Path(__file__).resolve().parents[1]


def P(text: str) -> Pattern:
    return Pattern.parse(text)


# -- covers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "permitted, requested, expected",
    [
        ("#", "#", True),
        ("#", "a/b/c", True),
        ("#", "+/+/+", True),
        ("a/#", "a/#", True),
        ("a/#", "a/b/#", True),
        ("a/#", "a/+/c", True),
        ("a/#", "a/b/c", True),
        ("a/#", "#", False),
        ("a/#", "+/b/c", False),
        ("a/#", "b/#", False),
        ("a/b/#", "a/#", False),
        ("a/b/#", "a/b/+", True),
        ("a/b/+", "a/b/#", True),  # three levels only: a/b/# is exactly a/b/+
        ("a/b/c/#", "a/b/c", True),  # a/b/c/# can only match a/b/c
        ("a/b/c", "a/b/c/#", True),
        ("a/b/c", "a/b/+", False),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/+/c", True),
        ("a/+/c", "a/b/+", False),
        ("a/+/c", "a/#", False),
        ("+/+/supply_temp", "plant/+/supply_temp", True),
        ("+/+/supply_temp", "plant/chiller-1/#", False),
        ("+/#", "#", True),
        ("+/+/+", "#", True),
        ("+/+/+/#", "#", True),
        ("plant/chiller-1/#", "plant/chiller-1/supply_temp", True),
        ("plant/chiller-1/#", "plant/chiller-2/supply_temp", False),
        ("plant/chiller-1/#", "plant/+/supply_temp", False),
    ],
)
def test_covers(permitted, requested, expected):
    assert covers(P(permitted), P(requested)) is expected


NAMES = ["a", "b", "c"]
FRESH = "zz-not-in-any-pattern"


@st.composite
def patterns(draw):
    """Any valid pattern over a small alphabet, so that overlaps are common."""
    depth = draw(st.integers(min_value=0, max_value=3))
    levels = [draw(st.sampled_from(NAMES + ["+"])) for _ in range(depth)]
    if depth == 3 and draw(st.booleans()):
        return P("/".join(levels))
    return P("/".join(levels + ["#"]))


def point_ids():
    return st.tuples(*[st.sampled_from(NAMES + [FRESH])] * 3).map("/".join)


@given(patterns(), patterns(), point_ids())
def test_covers_is_sound(permitted, requested, point_id):
    """Whatever a covered request matches, the permitted pattern matches too."""
    if covers(permitted, requested) and requested.matches(point_id):
        assert permitted.matches(point_id)


@given(patterns(), patterns())
def test_covers_is_complete(permitted, requested):
    """When not covered, a point the request matches and the grant does not exists: build it."""
    assume(not covers(permitted, requested))
    from hvac_push.transport.auth import _three_levels

    witness = []
    for p, r in zip(_three_levels(permitted), _three_levels(requested)):
        witness.append(FRESH if r == "+" else r)
    point_id = "/".join(witness)
    assert requested.matches(point_id) and not permitted.matches(point_id)


@given(st.lists(patterns(), min_size=1, max_size=4), patterns())
def test_a_union_of_grants_covers_no_more_than_its_best_member(grants, requested):
    """The witness construction also escapes every grant at once (the reason one-by-one is exact)."""
    permissions = Permissions(tuple(grants))
    if permissions.covers(requested):
        return
    from hvac_push.transport.auth import _three_levels

    point_id = "/".join(FRESH if r == "+" else r for r in _three_levels(requested))
    assert requested.matches(point_id)
    assert not permissions.allows(point_id)


def test_permissions_split_allows_and_default_subscription():
    grant = Permissions((P("plant/chiller-1/#"), P("plant/+/supply_temp")), may_ack=False)
    allowed, forbidden = grant.split([P("plant/chiller-1/power"), P("#"), P("plant/ahu-1/supply_temp")])
    assert [p.text for p in allowed] == ["plant/chiller-1/power", "plant/ahu-1/supply_temp"]
    assert [p.text for p in forbidden] == ["#"]
    assert grant.allows("plant/ahu-2/supply_temp") and not grant.allows("plant/ahu-2/power")
    assert grant.subscription().key == {"plant/chiller-1/#", "plant/+/supply_temp"}
    assert not grant.everything and ALL.everything and ALL.may_ack
    with pytest.raises(AttributeError):
        grant.may_ack = True  # type: ignore[misc]


# -- claims and sources -------------------------------------------------------


@pytest.mark.parametrize(
    "claims, reason",
    [
        ({}, "grants no points"),
        ({"points": []}, "grants no points"),
        ({"points": [1]}, "bad point pattern"),
        ({"points": ["a/#/b"]}, "bad point pattern"),
        ({"points": ["#"] * 101}, "more than 100"),
        ({"points": ["#"], "ack": "yes"}, "'ack'"),
    ],
)
def test_bad_claims_are_refused(claims, reason):
    with pytest.raises(AuthError, match=reason):
        permissions_from_claims(claims)


def test_claims_become_permissions():
    grant = permissions_from_claims({"points": "plant/#", "ack": True}, subject="ops", expires=5.0)
    assert grant == Permissions((P("plant/#"),), may_ack=True, subject="ops", expires=5.0)


def test_token_sources_in_order_of_precedence():
    assert token_from_request({"authorization": "Bearer abc"}, ["bearer.def"], "token=ghi") == "abc"
    assert token_from_request({"authorization": "bearer   abc  "}, [], "") == "abc"
    assert token_from_request({}, ["hvac-push.v1", "bearer.def"], "token=ghi") == "def"
    assert token_from_request({}, ["hvac-push.v1"], "points=a/%23&token=g%2Bh+i") == "g+h+i"
    assert token_from_request({}, [], "points=%23") is None
    with pytest.raises(AuthError) as e:
        token_from_request({"authorization": "Basic dXNlcjpwdw=="}, [], "")
    assert e.value.token_presented


# -- JWT ------------------------------------------------------------------


def make_jwt(claims, key=SECRET, algorithm="HS256", **extra):
    return jwt.encode({"exp": int(time.time()) + 60, **claims, **extra}, key, algorithm=algorithm)


def test_hs256_tokens():
    verifier = JWTVerifier(SECRET, "HS256")
    grant = verifier.verify(make_jwt({"points": ["plant/#"], "sub": "dash"}))
    assert grant.patterns == (P("plant/#"),) and grant.subject == "dash" and not grant.may_ack
    assert grant.expires is not None and grant.expires > time.time()
    for bad, reason in [
        (make_jwt({"points": ["#"]}, key=b"x" * 40), "invalid token"),
        (make_jwt({"points": ["#"]}, exp=int(time.time()) - 5), "token expired"),
        (jwt.encode({"points": ["#"]}, SECRET, algorithm="HS256"), "invalid token"),  # no exp
        (jwt.encode({"points": ["#"], "exp": int(time.time()) + 60}, "", algorithm="none"), "invalid token"),
        ("not-a-jwt", "invalid token"),
        (make_jwt({"points": ["#"]})[:-3] + "abc", "invalid token"),
        (make_jwt({}), "grants no points"),
    ]:
        with pytest.raises(AuthError, match=reason):
            verifier.verify(bad)


def test_audience_and_issuer():
    verifier = JWTVerifier(SECRET, "HS256", audience="hvac", issuer="idp")
    good = make_jwt({"points": ["#"], "aud": "hvac", "iss": "idp"})
    assert verifier.verify(good).everything
    for claims in ({"aud": "other", "iss": "idp"}, {"aud": "hvac"}, {"iss": "idp"}):
        with pytest.raises(AuthError):
            verifier.verify(make_jwt({"points": ["#"], **claims}))
    # With no audience configured, a token that names one is still accepted.
    assert JWTVerifier(SECRET, "HS256").verify(make_jwt({"points": ["#"], "aud": "x"})).everything


def write_keys(tmp_path, kind):
    private = rsa.generate_private_key(65537, 2048) if kind == "RS256" else ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / f"{kind}.pub.pem"
    path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, str(path)


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
def test_public_key_tokens(tmp_path, kind):
    private, path = write_keys(tmp_path, kind)
    verifier = JWTVerifier.from_files(public_key_file=path)
    assert verifier.algorithm == kind
    assert verifier.verify(make_jwt({"points": ["#"], "ack": True}, key=private, algorithm=kind)).may_ack
    # An HS256 token "signed" with the public key text must not pass (algorithm confusion).
    pem = Path(path).read_bytes()
    forged = jwt.api_jws.PyJWS().encode(b'{"points":["#"],"exp":9999999999}', pem[:40] * 2, algorithm="HS256")
    with pytest.raises(AuthError):
        verifier.verify(forged)
    other = "ES256" if kind == "RS256" else "RS256"
    with pytest.raises(ValueError, match="cannot check"):
        JWTVerifier.from_files(public_key_file=path, algorithm=other)


def test_bad_key_files(tmp_path):
    short = tmp_path / "short"
    short.write_bytes(b"tooshort\n")
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JWTVerifier.from_files(secret_file=str(short))
    with pytest.raises(ValueError, match="not a PEM public key"):
        JWTVerifier.from_files(public_key_file=str(junk))
    with pytest.raises(ValueError, match="No such file"):
        JWTVerifier.from_files(secret_file=str(tmp_path / "missing"))
    good = tmp_path / "secret"
    good.write_bytes(SECRET)
    with pytest.raises(ValueError, match="HS256"):
        JWTVerifier.from_files(secret_file=str(good), algorithm="RS256")
    with pytest.raises(ValueError, match="exactly one"):
        JWTVerifier.from_files()


# -- static tokens --------------------------------------------------------------


def token_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "tokens.toml"
    path.write_text(body)
    return str(path)


def test_static_tokens_are_stored_hashed_and_checked(tmp_path):
    path = token_file(
        tmp_path,
        f"""
[[token]]
name = "control-room"
sha256 = "{hash_token('room-token-0123456789')}"
points = ["#"]
ack = true

[[token]]
name = "dashboard"
sha256 = "{hash_token('dash-token-0123456789').upper()}"
points = ["plant/+/supply_temp"]

[[token]]
name = "old"
sha256 = "{hash_token('old-token-0123456789')}"
points = ["#"]
expires = 2001-01-01T00:00:00Z
""",
    )
    tokens = StaticTokens.load(path)
    assert len(tokens) == 3
    room = tokens.verify("room-token-0123456789")
    assert room.everything and room.may_ack and room.subject == "control-room" and room.expires is None
    dash = tokens.verify("dash-token-0123456789")
    assert dash.patterns == (P("plant/+/supply_temp"),) and not dash.may_ack
    with pytest.raises(AuthError, match="expired"):
        tokens.verify("old-token-0123456789")
    with pytest.raises(AuthError, match="invalid"):
        tokens.verify("room-token-012345678")
    assert "room-token" not in Path(path).read_text()


@pytest.mark.parametrize(
    "body, message",
    [
        ("not toml [", "not a TOML token file"),
        ("x = 1", r"no \[\[token\]\] entries"),
        ('[[token]]\nsha256 = "abc"\npoints = ["#"]', "64 hex digits"),
        ('[[token]]\nsha256 = "' + "g" * 64 + '"\npoints = ["#"]', "64 hex digits"),
        ('[[token]]\nsha256 = "' + "a" * 64 + '"', "grants no points"),
        ('[[token]]\nsha256 = "' + "a" * 64 + '"\npoints = ["#"]\nexpires = 2030-01-01T00:00:00', "time zone"),
        ('[[token]]\nsha256 = "' + "a" * 64 + '"\npoints = ["#"]\n[[token]]\nsha256 = "' + "A" * 64
         + '"\npoints = ["#"]', "duplicate"),
    ],
)
def test_bad_token_files(tmp_path, body, message):
    with pytest.raises(ValueError, match=message):
        StaticTokens.load(token_file(tmp_path, body))


def test_authenticator_tries_each_verifier(tmp_path):
    path = token_file(tmp_path, f'[[token]]\nsha256 = "{hash_token("static-0123456789abcdef")}"\npoints = ["a/#"]\n')
    auth = Authenticator([StaticTokens.load(path), JWTVerifier(SECRET, "HS256")])
    assert auth.verify("static-0123456789abcdef").patterns == (P("a/#"),)
    assert auth.verify(make_jwt({"points": ["b/#"]})).patterns == (P("b/#"),)
    with pytest.raises(AuthError, match="expired"):
        auth.verify(make_jwt({"points": ["b/#"]}, exp=int(time.time()) - 10))
    for bad in ["", "x" * 9000, "tok\u00e9n"]:
        with pytest.raises(AuthError):
            auth.verify(bad)
    with pytest.raises(AuthError) as e:
        auth.authenticate({}, [], "")
    assert not e.value.token_presented
    assert build_authenticator() is None
    with pytest.raises(ValueError):
        build_authenticator(audience="x")


def test_hash_helper_output_loads_and_admits_the_token(tmp_path, capsys):
    assert main(["hash", "--generate", "--name", "panel", "--points", "plant/#", "--ack"]) == 0
    out, err = capsys.readouterr()
    token = err.rsplit(" ", 1)[1].strip()
    path = token_file(tmp_path, out)
    grant = StaticTokens.load(path).verify(token)
    assert grant.subject == "panel" and grant.may_ack and grant.patterns == (P("plant/#"),)
    assert token not in out


def test_hash_helper_as_a_module_reads_the_token_from_stdin(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hvac_push.transport.auth", "hash", "--name", "x"],
        input="from-stdin-token-0123456789\n", capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert StaticTokens.load(token_file(tmp_path, done.stdout)).verify("from-stdin-token-0123456789").everything


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_any_text_either_verifies_or_raises_auth_error(text):
    auth = Authenticator([JWTVerifier(SECRET, "HS256")])
    try:
        auth.verify(text)
    except AuthError:
        pass


# -- behaviours mutation testing found unpinned (scripts/mutation, docs/testing.md) ------------------


def test_a_grant_of_exactly_the_pattern_limit_is_accepted():
    assert len(permissions_from_claims({"points": [f"a/b/c{i}" for i in range(100)]}).patterns) == 100


def test_the_shelve_claim_grants_shelving_and_must_be_a_bool():
    assert permissions_from_claims({"points": ["#"], "shelve": True}).may_shelve
    assert not permissions_from_claims({"points": ["#"]}).may_shelve
    with pytest.raises(AuthError, match="^claim 'shelve' must be true or false$"):
        permissions_from_claims({"points": ["#"], "shelve": "yes"})


def test_a_grant_without_a_subject_is_anonymous():
    assert permissions_from_claims({"points": ["#"]}).subject == ""


def test_refusals_carry_the_exact_reason_clients_are_sent():
    auth = Authenticator([JWTVerifier(SECRET, "HS256")])
    for call, reason in [
        (lambda: token_from_request({"authorization": "Basic x"}, [], ""), "Authorization must be 'Bearer <token>'"),
        (lambda: auth.verify(""), "invalid token"),
        (lambda: auth.verify("not-a-jwt"), "invalid token"),
        (lambda: auth.verify("a.b.c"), "invalid token"),
        (lambda: auth.authenticate({}, [], ""), "a bearer token is required"),
        (lambda: permissions_from_claims({}), "token grants no points (claim 'points' must be a non-empty list)"),
        (lambda: permissions_from_claims({"points": ["a/#/b"]}), "token holds a bad point pattern"),
        (lambda: permissions_from_claims({"points": ["#"], "ack": 1}), "claim 'ack' must be true or false"),
    ]:
        with pytest.raises(AuthError) as e:
            call()
        assert e.value.reason == reason
    with pytest.raises(AuthError) as e:
        auth.authenticate({}, [], "")
    assert e.value.token_presented is False


def test_authenticate_returns_the_grant_of_the_presented_token():
    auth = Authenticator([JWTVerifier(SECRET, "HS256")])
    grant = auth.authenticate({"authorization": "Bearer " + make_jwt({"points": ["a/#"]})}, [], "")
    assert grant.patterns == (P("a/#"),)


def test_a_jwt_is_expired_from_the_second_its_exp_names_unless_leeway_is_given():
    token = make_jwt({"points": ["#"]}, exp=int(time.time()))
    with pytest.raises(AuthError, match="^token expired$"):
        JWTVerifier(SECRET, "HS256").verify(token)
    old = make_jwt({"points": ["#"]}, exp=int(time.time()) - 5)
    assert JWTVerifier(SECRET, "HS256", leeway=600).verify(old).everything


def test_an_unknown_jwt_algorithm_is_refused_naming_the_allowed_ones():
    with pytest.raises(ValueError, match="^JWT algorithm must be one of HS256, RS256, ES256$"):
        JWTVerifier(SECRET, "none")


def test_a_secret_file_verifier_checks_signature_audience_and_issuer(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"k" * 32 + b"\n")  # exactly the minimum length is enough
    verifier = JWTVerifier.from_files(secret_file=str(secret), audience="hvac", issuer="idp")
    assert verifier.algorithm == "HS256"
    good = make_jwt({"points": ["#"], "aud": "hvac", "iss": "idp"}, key=b"k" * 32)
    assert verifier.verify(good).everything
    for claims in ({"aud": "other", "iss": "idp"}, {"aud": "hvac", "iss": "other"}):
        with pytest.raises(AuthError):
            verifier.verify(make_jwt({"points": ["#"], **claims}, key=b"k" * 32))
    with pytest.raises(ValueError, match="^give exactly one of a JWT secret file or a JWT public key file$"):
        JWTVerifier.from_files(secret_file=str(secret), public_key_file=str(secret))


def test_a_public_key_verifier_checks_audience_and_issuer(tmp_path):
    private, path = write_keys(tmp_path, "ES256")
    verifier = JWTVerifier.from_files(public_key_file=path, audience="hvac", issuer="idp")
    assert verifier.verify(make_jwt({"points": ["#"], "aud": "hvac", "iss": "idp"}, key=private, algorithm="ES256"))
    for claims in ({"aud": "other", "iss": "idp"}, {"aud": "hvac", "iss": "other"}):
        with pytest.raises(AuthError):
            verifier.verify(make_jwt({"points": ["#"], **claims}, key=private, algorithm="ES256"))


def test_an_ec_key_on_another_curve_than_p256_is_refused(tmp_path):
    path = tmp_path / "p384.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="expected an RSA or P-256 EC public key$"):
        JWTVerifier.from_files(public_key_file=str(path))


def test_build_authenticator_admits_both_static_tokens_and_jwts(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    path = token_file(tmp_path, f'[[token]]\nsha256 = "{hash_token("static-0123456789abcdef")}"\npoints = ["a/#"]\n')
    auth = build_authenticator(token_file=path, jwt_secret_file=str(secret), audience="hvac", issuer="idp")
    assert auth is not None
    assert auth.verify("static-0123456789abcdef").patterns == (P("a/#"),)
    assert auth.verify(make_jwt({"points": ["b/#"], "aud": "hvac", "iss": "idp"})).patterns == (P("b/#"),)
    for claims in ({"aud": "hvac", "iss": "other"}, {"aud": "other", "iss": "idp"}):
        with pytest.raises(AuthError):
            auth.verify(make_jwt({"points": ["b/#"], **claims}))
    private, public = write_keys(tmp_path, "ES256")
    keyed = build_authenticator(jwt_public_key_file=public, jwt_algorithm="ES256", audience="hvac")
    assert keyed is not None
    assert keyed.verify(make_jwt({"points": ["c/#"], "aud": "hvac"}, key=private, algorithm="ES256")).everything is False
    with pytest.raises(AuthError):
        keyed.verify(make_jwt({"points": ["c/#"], "aud": "other"}, key=private, algorithm="ES256"))
    with pytest.raises(ValueError, match="cannot check RS256"):
        build_authenticator(jwt_public_key_file=public, jwt_algorithm="RS256")
    only_static = build_authenticator(token_file=path)
    assert only_static is not None and len(only_static.verifiers) == 1
    with pytest.raises(ValueError, match="^JWT options need --auth-jwt-secret-file or --auth-jwt-public-key-file$"):
        build_authenticator(token_file=path, issuer="idp")
    with pytest.raises(ValueError, match="^an Authenticator needs at least one verifier$"):
        Authenticator([])


def test_the_token_length_limit_and_ascii_rule_hold_even_for_listed_tokens(tmp_path):
    longest, too_long, accented = "t" * 8192, "t" * 8193, "tok\u00e9n-0123456789abcdef"
    body = "".join(f'[[token]]\nsha256 = "{hash_token(t)}"\npoints = ["#"]\n' for t in (longest, too_long, accented))
    auth = Authenticator([StaticTokens.load(token_file(tmp_path, body))])
    assert auth.verify(longest).everything
    for refused in (too_long, accented):
        with pytest.raises(AuthError, match="^invalid token$"):
            auth.verify(refused)


def test_an_expired_static_token_is_reported_as_expired_through_the_authenticator(tmp_path, monkeypatch):
    import hvac_push.transport.auth as auth_module

    body = f'[[token]]\nsha256 = "{hash_token("timed-0123456789abcdef")}"\npoints = ["#"]\nexpires = 1000\n'
    auth = Authenticator([StaticTokens.load(token_file(tmp_path, body))])  # integer epoch seconds are accepted
    monkeypatch.setattr(auth_module, "_now", lambda: 999.5)
    assert auth.verify("timed-0123456789abcdef").expires == 1000.0
    monkeypatch.setattr(auth_module, "_now", lambda: 1000.0)  # expired at the very second it names
    with pytest.raises(AuthError) as e:
        auth.verify("timed-0123456789abcdef")
    assert e.value.reason == "token expired"


@pytest.mark.parametrize(
    "body, message",
    [
        ("token = []", r"tokens.toml: no \[\[token\]\] entries$"),
        ('[[token]]\npoints = ["#"]', r"tokens.toml: token 1: 'sha256' must be 64 hex digits$"),
        ('[[token]]\nsha256 = 5\npoints = ["#"]', r"tokens.toml: token 1: 'sha256' must be 64 hex digits$"),
        ('[[token]]\nsha256 = "' + "a" * 64 + '"\npoints = ["#"]\n[[token]]\npoints = ["#"]',
         r"tokens.toml: token 2: 'sha256' must be 64 hex digits$"),
        ('[[token]]\nsha256 = "' + "a" * 64 + '"\npoints = ["#"]\nname = 5', r"token 1: 'name' must be a string$"),
        ('[[token]]\nsha256 = "' + "a" * 64 + '"\npoints = ["#"]\nexpires = true',
         r"token 1: 'expires' must be a date-time or epoch seconds$"),
        ('[[token]]\nsha256 = "' + "a" * 64 + '"\npoints = ["#"]\nexpires = "soon"',
         r"token 1: 'expires' must be a date-time or epoch seconds$"),
        ('[[token]]\nsha256 = "' + "a" * 64 + '"\npoints = ["#"]\nexpires = 2030-01-01T00:00:00',
         r"token 1: 'expires' needs a time zone, e.g. 2026-06-30T00:00:00Z$"),
    ],
)
def test_a_bad_token_file_entry_is_named_by_its_position_and_reason(tmp_path, body, message):
    with pytest.raises(ValueError, match=message):
        StaticTokens.load(token_file(tmp_path, body))


def test_the_hash_helper_grants_ack_and_shelve_only_when_asked(tmp_path, capsys, monkeypatch):
    tokens = ["plain-token-0123456789", "shelver-token-0123456789"]
    entries = []
    for token, flags in zip(tokens, ([], ["--shelve"])):
        monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
        assert main(["hash", "--name", token[:5], "--points", "a/#", "--points", "b/#", *flags]) == 0
        entries.append(capsys.readouterr().out)
    static = StaticTokens.load(token_file(tmp_path, "".join(entries)))
    plain, shelver = (static.verify(t) for t in tokens)
    assert plain.patterns == shelver.patterns == (P("a/#"), P("b/#"))
    assert not plain.may_ack and not plain.may_shelve
    assert shelver.may_shelve and not shelver.may_ack
