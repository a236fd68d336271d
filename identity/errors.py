"""The errors of the service, and the one function that renders them.

    IdentityError                     400 invalid_request   a client may see it (base)
    ├── InvalidRequest                400 invalid_request
    ├── InvalidSubjectToken           400 invalid_request   a provider's id_token broke a rule
    ├── InvalidGrant                  400 invalid_grant
    ├── InvalidScope                  400 invalid_scope
    ├── InvalidTarget                 400 invalid_target
    ├── UnsupportedGrantType          400 unsupported_grant_type
    ├── InvalidVerificationToken      400 invalid_token     a mail token, not a credential
    ├── InvalidClient                 401 invalid_client    WWW-Authenticate: Basic
    ├── InvalidToken                  401 invalid_token     WWW-Authenticate: Bearer
    ├── AccessDenied                  403 access_denied
    ├── MailDisabled                  403 mail_disabled
    ├── NotFound                      404 not_found
    ├── MethodNotAllowed              405 method_not_allowed
    ├── AccountConflict               409 account_conflict
    ├── Conflict                      409 conflict
    ├── MailUndeliverable             409 mail_undeliverable  its provider said it takes no mail
    ├── PayloadTooLarge               413 request_too_large
    ├── RateLimited                   429 rate_limited      Retry-After
    ├── ServerError                   500 server_error      anything unexpected: a bug
    └── TemporarilyUnavailable        503 temporarily_unavailable  Retry-After

    TokenRejected                     a token broke a rule; `reason` names the rule
    KeysUnavailable                   no usable verification keys: fail closed (503)

A description is written for the client and never holds a token or a library's message;
`reason` is a short machine code for logs and metrics only (docs/api.md lists them).
"""

from __future__ import annotations

from typing import ClassVar

import orjson


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


class InvalidSubjectToken(IdentityError):
    """A provider's id_token broke a rule; which one (`reason`) goes to logs and metrics only.
    The exchange answers 400, the callback 401 (docs/api.md)."""

    def __init__(self, reason: str) -> None:
        super().__init__("the id_token is not valid", reason=reason)


class InvalidGrant(IdentityError):
    error = "invalid_grant"


class InvalidScope(IdentityError):
    error = "invalid_scope"


class InvalidTarget(IdentityError):
    error = "invalid_target"


class UnsupportedGrantType(IdentityError):
    error = "unsupported_grant_type"


class InvalidVerificationToken(IdentityError):
    error = "invalid_token"


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


class AccessDenied(IdentityError):
    status = 403
    error = "access_denied"


class MailDisabled(IdentityError):
    status = 403
    error = "mail_disabled"


class NotFound(IdentityError):
    status = 404
    error = "not_found"


class MethodNotAllowed(IdentityError):
    status = 405
    error = "method_not_allowed"


class AccountConflict(IdentityError):
    status = 409
    error = "account_conflict"


class Conflict(IdentityError):
    status = 409
    error = "conflict"


class MailUndeliverable(IdentityError):
    status = 409
    error = "mail_undeliverable"


class PayloadTooLarge(IdentityError):
    status = 413
    error = "request_too_large"


class HeadersTooLarge(IdentityError):
    status = 431
    error = "request_too_large"


class RateLimited(IdentityError):
    status = 429
    error = "rate_limited"

    def __init__(self, description: str, *, retry_after: int, reason: str = "rate_limited"):
        super().__init__(description, reason=reason)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServerError(IdentityError):
    """What any unexpected exception becomes: the client learns only that it failed."""

    status = 500
    error = "server_error"

    def __init__(self) -> None:
        super().__init__("internal error")


class TemporarilyUnavailable(IdentityError):
    status = 503
    error = "temporarily_unavailable"

    def __init__(self, description: str, *, reason: str | None = None, retry_after: int = 5):
        super().__init__(description, reason=reason)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TokenRejected(Exception):
    """A token (a provider's id_token or one of ours) broke a rule; `reason` names it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(Exception):
    """No usable keys to verify with: the caller must fail closed."""


def render(error: IdentityError) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and RFC 6749 body of an error: the only place an error body is built."""
    body = orjson.dumps({"error": error.error, "error_description": error.description})
    headers = {"Cache-Control": "no-store", **error.headers()}
    return error.status, headers, body
