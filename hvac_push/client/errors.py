"""What the client raises, so callers can tell "fix your token" from "try again later"."""

from __future__ import annotations


class ClientError(Exception):
    """Base of everything hvac_push.client raises on purpose."""


class HandshakeError(ClientError):
    """The server refused the WebSocket upgrade with an HTTP status.

    C{retryable} is true for statuses that a later attempt can pass (429, 5xx);
    C{retry_after} is the server's C{Retry-After} in seconds, when it gave one.
    """

    def __init__(self, status: int, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"the server refused the connection: HTTP {status} {reason}".rstrip())
        self.status = status
        self.reason = reason
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


class AuthenticationError(HandshakeError):
    """HTTP 401: no token, or one the server does not accept (invalid or expired)."""

    def __init__(self, status: int, reason: str, had_token: bool) -> None:
        super().__init__(status, reason)
        hint = "the token was refused (invalid or expired)" if had_token else "this server requires a token (token=...)"
        self.args = (f"authentication failed: {hint}: HTTP {status} {reason}".rstrip(),)


class ServerError(ClientError):
    """The server answered a request with an C{error} message (docs/protocol.md, error codes)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class ConnectionLost(ClientError):
    """The connection closed before a request was answered, or while none was open."""
