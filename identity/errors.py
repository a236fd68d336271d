"""The errors a client can see, each rendered as an RFC 6749 body by one handler.

    IdentityError                     400 invalid_request (base)
    ├── InvalidRequest                400 invalid_request
    ├── InvalidGrant                  400 invalid_grant
    ├── InvalidScope                  400 invalid_scope
    ├── InvalidTarget                 400 invalid_target
    ├── UnsupportedGrantType          400 unsupported_grant_type
    ├── InvalidClient                 401 invalid_client
    ├── InvalidToken                  401 invalid_token   (WWW-Authenticate: Bearer)
    ├── NotFound                      404 not_found
    ├── AccountConflict               409 account_conflict
    ├── Conflict                      409 conflict
    ├── InvalidVerificationToken      400 invalid_token   (a mail token, not a credential)
    ├── PayloadTooLarge               413 request_too_large
    ├── RateLimited                   429 rate_limited    (Retry-After)
    └── TemporarilyUnavailable        503 temporarily_unavailable

The description is written for the client and never holds a token or a library's message;
`reason` is a short machine code that goes to logs and metrics only.
"""

from __future__ import annotations

from typing import ClassVar


class IdentityError(Exception):
    status: ClassVar[int] = 400
    error: ClassVar[str] = "invalid_request"

    def __init__(self, description: str, *, reason: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.reason = reason or self.error

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(IdentityError):
    pass


class InvalidGrant(IdentityError):
    error = "invalid_grant"


class InvalidScope(IdentityError):
    error = "invalid_scope"


class InvalidTarget(IdentityError):
    error = "invalid_target"


class UnsupportedGrantType(IdentityError):
    error = "unsupported_grant_type"


class InvalidClient(IdentityError):
    status = 401
    error = "invalid_client"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="identity"'}


class InvalidToken(IdentityError):
    status = 401
    error = "invalid_token"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class NotFound(IdentityError):
    status = 404
    error = "not_found"


class AccountConflict(IdentityError):
    status = 409
    error = "account_conflict"


class Conflict(IdentityError):
    status = 409
    error = "conflict"


class PayloadTooLarge(IdentityError):
    status = 413
    error = "request_too_large"


class InvalidVerificationToken(IdentityError):
    error = "invalid_token"


class RateLimited(IdentityError):
    status = 429
    error = "rate_limited"

    def __init__(self, description: str, *, retry_after: int, reason: str = "rate_limited"):
        super().__init__(description, reason=reason)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TemporarilyUnavailable(IdentityError):
    status = 503
    error = "temporarily_unavailable"

    def __init__(self, description: str, *, reason: str | None = None, retry_after: int = 5):
        super().__init__(description, reason=reason)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class UpstreamTokenError(Exception):
    """An upstream id_token failed a rule of SPEC §5; `reason` names the rule (for logs only)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(Exception):
    """No usable upstream keys: the caller must fail closed with 503."""
