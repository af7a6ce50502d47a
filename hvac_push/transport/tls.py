"""The TLS policy of C{ssl:} listeners: TLS 1.2 with ECDHE key exchange and AEAD ciphers only, and TLS 1.3.

Twisted's defaults still accept TLS 1.2 suites without forward secrecy
(plain-RSA key exchange) and CBC suites with SHA-1 MACs; a plant network's
telemetry should not be readable later by whoever obtains the server's key.
The policy wraps the context factory Twisted's C{ssl:} endpoint parser
builds, so every C{ssl:} option (certificate chain, DH parameters) keeps
working.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IOpenSSLContextFactory, IStreamServerEndpoint
from zope.interface import implementer

#: OpenSSL cipher string for TLS 1.2: forward-secret key exchange, authenticated encryption.
#: (TLS 1.3 suites are configured separately by OpenSSL and are all AEAD.)
MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


@implementer(IOpenSSLContextFactory)
class PolicyContextFactory:
    """The context of C{inner}, restricted to TLS 1.2 or later and to C{ciphers} for TLS 1.2.

    OpenSSL freezes a context once a connection uses it, so it is restricted
    once, on first use, and the same context serves every connection after.
    """

    def __init__(self, inner: Any, ciphers: str = MODERN_CIPHERS):
        self._inner = inner
        self.ciphers = ciphers
        self._context: Any = None

    def getContext(self) -> Any:
        if self._context is None:
            from OpenSSL import SSL

            context = self._inner.getContext()
            context.set_min_proto_version(SSL.TLS1_2_VERSION)
            context.set_cipher_list(self.ciphers.encode("ascii"))
            self._context = context
        return self._context


def server_endpoint(reactor: Any, description: str, ciphers: str | None = MODERN_CIPHERS) -> IStreamServerEndpoint:
    """The endpoint a strports C{description} names, with the TLS policy applied to C{ssl:} ones.

    C{ciphers=None} keeps Twisted's own defaults. A cipher string OpenSSL
    cannot use at all raises C{ValueError}.
    """
    # serverFromString is untyped; adapting checks at run time that it built an endpoint.
    endpoint = IStreamServerEndpoint(serverFromString(reactor, description))
    if ciphers is not None and isinstance(endpoint, SSL4ServerEndpoint):
        policy = PolicyContextFactory(endpoint._sslContextFactory, ciphers)
        try:
            policy.getContext()
        except Exception as e:  # OpenSSL.SSL.Error: no cipher matches
            raise ValueError(f"TLS ciphers {ciphers!r}: {e}") from None
        # The parser builds the context factory itself; wrapping it is the only way in.
        endpoint._sslContextFactory = policy
    return endpoint


__all__ = ["MODERN_CIPHERS", "PolicyContextFactory", "server_endpoint"]
