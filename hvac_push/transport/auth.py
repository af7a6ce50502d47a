"""Who may connect and what they may read: bearer tokens checked at the WebSocket handshake.

Authentication is off unless an L{Authenticator} is given to the server; every
client then holds L{ALL}. With it on, a client presents one token, from (in
this order of precedence):

 1. an C{Authorization: Bearer <token>} header,
 2. a C{Sec-WebSocket-Protocol} value C{bearer.<token>}, offered next to
    C{hvac-push.v1} (browsers cannot set headers; the server selects
    C{hvac-push.v1} and never echoes the token protocol back),
 3. a C{token=<token>} query parameter (last resort: URLs end up in logs).

A token is either a JWT (HS256 with a shared secret, RS256 or ES256 with a
public key; C{exp} is required) or a static token listed, hashed, in a TOML
file. Either way it grants L{Permissions}: the point patterns the holder may
read (claim C{points}), whether it may acknowledge alarms (claim C{ack}) and
whether it may shelve alarms and take points out of service (claim C{shelve}:
ISA-18.2 makes these a separate authorization from acknowledging).

Run C{python -m hvac_push.transport.auth hash --generate --name NAME --points 'plant/#'}
to make a static token and the file entry that admits it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import json
import secrets
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

from hvac_push.core.points import InvalidPoint, Pattern, Subscription
from hvac_push.transport.wire import parse_query

#: The subprotocol prefix that carries a token: C{bearer.<token>}.
TOKEN_SUBPROTOCOL_PREFIX = "bearer."
#: Longer tokens are refused outright (a JWT with a few dozen patterns is ~2 KB).
MAX_TOKEN_LENGTH = 8192
#: At most this many patterns in one grant.
MAX_GRANT_PATTERNS = 100
#: Algorithms a JWT may be signed with; the server accepts exactly the configured one.
JWT_ALGORITHMS = ("HS256", "RS256", "ES256")
#: A shared HS256 secret shorter than this is refused (RFC 7518 section 3.2).
MIN_HMAC_SECRET_BYTES = 32


class AuthError(Exception):
    """A token that admits nobody. C{reason} is safe to send and to log: it never holds the token."""

    def __init__(self, reason: str, *, token_presented: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.token_presented = token_presented


# -- what a token grants --------------------------------------------------


def _three_levels(pattern: Pattern) -> tuple[str, ...]:
    """The pattern as three level filters, each a name or C{+}.

    Point ids always have exactly three levels, so a trailing C{#} is the same
    as C{+} for every level it stands for, and C{a/b/c/#} is the same as C{a/b/c}.
    """
    levels = pattern.levels
    if levels[-1] != "#":
        return levels
    fixed = levels[:-1]
    if len(fixed) >= 3:
        return fixed[:3]
    return fixed + ("+",) * (3 - len(fixed))


def covers(permitted: Pattern, requested: Pattern) -> bool:
    """Whether every point id C{requested} matches is also matched by C{permitted}.

    Level by level, a permitted C{+} covers anything and a permitted name covers
    only the same name: a requested C{+} stands for names the permitted name
    does not match. Because a level can take more names than any finite set of
    patterns lists, a pattern covered by the union of several permitted
    patterns is always covered by one of them, so checking them one at a time
    (L{Permissions.covers}) is exact.
    """
    return all(p == "+" or p == r for p, r in zip(_three_levels(permitted), _three_levels(requested)))


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one client may do: read points matching C{patterns}; acknowledge alarms if C{may_ack};
    shelve alarms and take points out of service if C{may_shelve}.

    C{subject} names the holder for logs (never the token); C{expires} is the
    epoch second at which the grant ends, or L{None}.
    """

    patterns: tuple[Pattern, ...]
    may_ack: bool = False
    subject: str = ""
    expires: float | None = None
    may_shelve: bool = False
    everything: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "everything", any(p.text == "#" for p in self.patterns))

    def covers(self, requested: Pattern) -> bool:
        """Whether C{requested} asks only for points this grant may read."""
        return self.everything or any(covers(p, requested) for p in self.patterns)

    def allows(self, point_id: str) -> bool:
        """Whether this grant may read C{point_id} (for code that sends single points, e.g. alarms)."""
        return self.everything or any(p.matches(point_id) for p in self.patterns)

    def split(self, requested: Iterable[Pattern]) -> tuple[tuple[Pattern, ...], tuple[Pattern, ...]]:
        """C{requested} as (covered, forbidden), in order."""
        allowed: list[Pattern] = []
        forbidden: list[Pattern] = []
        for pattern in requested:
            (allowed if self.covers(pattern) else forbidden).append(pattern)
        return tuple(allowed), tuple(forbidden)

    def subscription(self) -> Subscription:
        """The default subscription (C{#}) narrowed to this grant."""
        return Subscription.of(self.patterns)


#: The grant every client holds when authentication is off.
ALL = Permissions((Pattern.parse("#"),), may_ack=True, may_shelve=True)


def permissions_from_claims(claims: Mapping[str, Any], *, subject: str = "", expires: float | None = None) -> Permissions:
    """Read C{points} (required, a list of patterns), C{ack} and C{shelve} (optional bools) from a token's claims."""
    raw = claims.get("points")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise AuthError("token grants no points (claim 'points' must be a non-empty list)")
    if len(raw) > MAX_GRANT_PATTERNS:
        raise AuthError(f"token grants more than {MAX_GRANT_PATTERNS} patterns")
    patterns = []
    for item in raw:
        try:
            patterns.append(Pattern.parse(item))
        except InvalidPoint:
            raise AuthError("token holds a bad point pattern") from None
    ack = claims.get("ack", False)
    if not isinstance(ack, bool):
        raise AuthError("claim 'ack' must be true or false")
    shelve = claims.get("shelve", False)
    if not isinstance(shelve, bool):
        raise AuthError("claim 'shelve' must be true or false")
    return Permissions(
        tuple(dict.fromkeys(patterns)), may_ack=ack, subject=subject, expires=expires, may_shelve=shelve
    )


# -- where a token comes from ---------------------------------------------


def token_from_request(headers: Mapping[str, str], protocols: Sequence[str], query: str) -> str | None:
    """The bearer token a handshake carries, or L{None}; see the module docstring for the order.

    C{headers} has lower-case names (as Autobahn gives them); C{query} is the raw
    query string.
    """
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise AuthError("Authorization must be 'Bearer <token>'")
        return credentials.strip()
    for offered in protocols:
        if offered[: len(TOKEN_SUBPROTOCOL_PREFIX)].lower() == TOKEN_SUBPROTOCOL_PREFIX:
            return offered[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    tokens = parse_query(query).get("token")
    return (tokens[0] or None) if tokens else None


# -- verifying tokens -----------------------------------------------------


class TokenVerifier(Protocol):
    def verify(self, token: str) -> Permissions:
        """The grant C{token} carries, or raise L{AuthError}."""


class JWTVerifier:
    """Checks JWTs signed with one configured algorithm and key; C{exp} is required."""

    def __init__(
        self,
        key: Any,
        algorithm: str,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
    ):
        if algorithm not in JWT_ALGORITHMS:
            raise ValueError(f"JWT algorithm must be one of {', '.join(JWT_ALGORITHMS)}")
        self._key = key
        self.algorithm = algorithm
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway

    @classmethod
    def from_files(
        cls,
        *,
        secret_file: str | None = None,
        public_key_file: str | None = None,
        algorithm: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> "JWTVerifier":
        """Load the key; raise C{ValueError} with a one-line reason when it is unusable."""
        if (secret_file is None) == (public_key_file is None):
            raise ValueError("give exactly one of a JWT secret file or a JWT public key file")
        if secret_file is not None:
            algorithm = algorithm or "HS256"
            if algorithm != "HS256":
                raise ValueError(f"a shared secret signs HS256 tokens, not {algorithm}")
            secret = _read(secret_file).strip()
            if len(secret) < MIN_HMAC_SECRET_BYTES:
                raise ValueError(f"{secret_file}: the secret must be at least {MIN_HMAC_SECRET_BYTES} bytes")
            return cls(secret, "HS256", audience=audience, issuer=issuer)
        assert public_key_file is not None
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            key = load_pem_public_key(_read(public_key_file))
        except ValueError:
            raise ValueError(f"{public_key_file}: not a PEM public key") from None
        if isinstance(key, rsa.RSAPublicKey):
            kind = "RS256"
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            kind = "ES256"
        else:
            raise ValueError(f"{public_key_file}: expected an RSA or P-256 EC public key")
        algorithm = algorithm or kind
        if algorithm != kind:
            raise ValueError(f"{public_key_file}: a {kind} key cannot check {algorithm} tokens")
        return cls(key, algorithm, audience=audience, issuer=issuer)

    def verify(self, token: str) -> Permissions:
        import jwt

        if token.count(".") != 2:
            raise AuthError("invalid token")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidTokenError:
            raise AuthError("invalid token") from None
        subject = claims.get("sub")
        return permissions_from_claims(
            claims,
            subject=subject if isinstance(subject, str) else "",
            expires=float(claims["exp"]),
        )


def hash_token(token: str) -> str:
    """The hex SHA-256 a token file stores in place of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    permissions: Permissions


class StaticTokens:
    """Tokens listed in a TOML file by their SHA-256, never in clear.

    ::

        [[token]]
        name = "control-room"         # shown in logs as the subject
        sha256 = "<64 hex digits>"    # python -m hvac_push.transport.auth hash
        points = ["plant/#"]
        ack = true                    # optional, default false
        shelve = true                 # optional, default false: may shelve and set out of service
        expires = 2026-06-30T00:00:00Z  # optional

    Tokens must be random (the helper makes 256-bit ones), so a plain hash is
    enough; every entry is compared, in constant time, on every check.
    """

    def __init__(self, entries: Sequence[_Entry]):
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def load(cls, path: str) -> "StaticTokens":
        """Parse C{path}; raise C{ValueError} with a one-line reason when it is unusable."""
        try:
            document = tomllib.loads(_read(path).decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path}: not a TOML token file ({e})") from None
        tables = document.get("token")
        if not isinstance(tables, list) or not tables:
            raise ValueError(f"{path}: no [[token]] entries")
        entries = []
        seen: set[str] = set()
        for index, table in enumerate(tables, start=1):
            where = f"{path}: token {index}"
            digest = table.get("sha256")
            if not isinstance(digest, str) or len(digest) != 64:
                raise ValueError(f"{where}: 'sha256' must be 64 hex digits")
            try:
                raw = bytes.fromhex(digest)
            except ValueError:
                raise ValueError(f"{where}: 'sha256' must be 64 hex digits") from None
            if digest.lower() in seen:
                raise ValueError(f"{where}: duplicate sha256")
            seen.add(digest.lower())
            name = table.get("name", f"token-{index}")
            if not isinstance(name, str):
                raise ValueError(f"{where}: 'name' must be a string")
            try:
                expires = _expiry(table.get("expires"))
                permissions = permissions_from_claims(table, subject=name, expires=expires)
            except (AuthError, ValueError) as e:
                raise ValueError(f"{where}: {e}") from None
            entries.append(_Entry(raw, permissions))
        return cls(entries)

    def verify(self, token: str) -> Permissions:
        presented = hashlib.sha256(token.encode("utf-8")).digest()
        found: Permissions | None = None
        for entry in self._entries:  # no early exit: the time taken says nothing about which entry
            if hmac.compare_digest(entry.digest, presented):
                found = entry.permissions
        if found is None:
            raise AuthError("invalid token")
        if found.expires is not None and found.expires <= _now():
            raise AuthError("token expired")
        return found


class Authenticator:
    """Finds the token a handshake carries and asks each verifier in turn for its grant."""

    def __init__(self, verifiers: Sequence[TokenVerifier]):
        if not verifiers:
            raise ValueError("an Authenticator needs at least one verifier")
        self.verifiers = tuple(verifiers)

    def verify(self, token: str) -> Permissions:
        """The grant of C{token}; L{AuthError} if no verifier accepts it."""
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise AuthError("invalid token")
        expired: AuthError | None = None
        for verifier in self.verifiers:
            try:
                return verifier.verify(token)
            except AuthError as e:
                if e.reason == "token expired":
                    expired = e
        raise expired or AuthError("invalid token")

    def authenticate(self, headers: Mapping[str, str], protocols: Sequence[str], query: str) -> Permissions:
        """The grant a handshake's token carries; L{AuthError} (HTTP 401) when there is none."""
        token = token_from_request(headers, protocols, query)
        if token is None:
            raise AuthError("a bearer token is required", token_presented=False)
        return self.verify(token)


def build_authenticator(
    *,
    jwt_secret_file: str | None = None,
    jwt_public_key_file: str | None = None,
    jwt_algorithm: str | None = None,
    token_file: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
) -> Authenticator | None:
    """The authenticator these options describe, or L{None} (auth off); C{ValueError} when one is bad."""
    verifiers: list[TokenVerifier] = []
    if token_file is not None:
        verifiers.append(StaticTokens.load(token_file))
    if jwt_secret_file is not None or jwt_public_key_file is not None:
        verifiers.append(
            JWTVerifier.from_files(
                secret_file=jwt_secret_file,
                public_key_file=jwt_public_key_file,
                algorithm=jwt_algorithm,
                audience=audience,
                issuer=issuer,
            )
        )
    elif jwt_algorithm is not None or audience is not None or issuer is not None:
        raise ValueError("JWT options need --auth-jwt-secret-file or --auth-jwt-public-key-file")
    return Authenticator(verifiers) if verifiers else None


# -- helpers --------------------------------------------------------------


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or e}") from None


def _now() -> float:
    import time

    return time.time()


def _expiry(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("'expires' must be a date-time or epoch seconds")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError("'expires' needs a time zone, e.g. 2026-06-30T00:00:00Z")
        return value.timestamp()
    raise ValueError("'expires' must be a date-time or epoch seconds")


def _toml_entry(name: str, digest: str, points: Sequence[str], ack: bool, shelve: bool = False) -> str:
    return (
        "[[token]]\n"
        f"name = {json.dumps(name)}\n"
        f'sha256 = "{digest}"\n'
        f"points = [{', '.join(json.dumps(p) for p in points)}]\n"
        f"ack = {'true' if ack else 'false'}\n"
        + ("shelve = true\n" if shelve else "")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """C{python -m hvac_push.transport.auth hash}: print a token file entry for a token read from stdin (or made)."""
    parser = argparse.ArgumentParser(prog="python -m hvac_push.transport.auth", description=(__doc__ or "").split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    hashing = commands.add_parser(
        "hash",
        help="print a [[token]] entry for --auth-token-file",
        description="Read a token from standard input (or make one with --generate) and print "
        "the [[token]] entry that admits it. The entry holds only the token's SHA-256.",
    )
    hashing.add_argument("--name", default="client", help="shown in logs as the token's subject")
    hashing.add_argument(
        "--points", action="append", default=[], help="a pattern the holder may read (repeatable; default '#')"
    )
    hashing.add_argument("--ack", action="store_true", help="the holder may acknowledge alarms")
    hashing.add_argument(
        "--shelve", action="store_true", help="the holder may shelve alarms and take points out of service"
    )
    hashing.add_argument("--generate", action="store_true", help="make a new random token; it goes to stderr")
    args = parser.parse_args(argv)
    points = args.points or ["#"]
    try:
        permissions_from_claims({"points": points})
    except AuthError as e:
        parser.error(e.reason)
    if args.generate:
        token = secrets.token_urlsafe(32)
        print(f"token (give it to the client; it is not stored): {token}", file=sys.stderr)
    else:
        token = sys.stdin.readline().strip()
        if not token:
            parser.error("no token on standard input")
        if len(token) < 20:
            print("warning: short tokens can be guessed; prefer --generate", file=sys.stderr)
    sys.stdout.write(_toml_entry(args.name, hash_token(token), points, args.ack, args.shelve))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
