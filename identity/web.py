"""What every endpoint needs from a request: the services, its id, the caller's access token."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from . import inputs
from .errors import InvalidToken, UpstreamTokenError
from .tokens import AccessClaims, verify_local

if TYPE_CHECKING:
    from .app import Services

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def verify_access_token(request: Request, token: str) -> AccessClaims:
    """Signature, `typ`, `iss`, `aud`, times; raises InvalidToken. The session is not checked."""
    s = services(request)
    try:
        return verify_local(
            token,
            s.keys.view(),
            issuer=s.settings.issuer,
            audience=s.settings.access_audience,
            now=s.clock(),
            leeway=s.settings.clock_skew,
        )
    except UpstreamTokenError as error:
        raise InvalidToken("the access token is not valid", reason=error.reason) from None


def access_claims_or_none(request: Request, token: str) -> AccessClaims | None:
    """The claims when `token` is a valid access token of ours, else None (for endpoints that
    also accept refresh tokens: /revoke, /introspect)."""
    if token.count(".") != 2:  # refresh tokens are opaque, never three segments
        return None
    try:
        return verify_access_token(request, token)
    except InvalidToken:
        return None


async def authenticate(request: Request) -> AccessClaims:
    """The caller's access token, verified, whose session is still alive."""
    claims = verify_access_token(request, inputs.bearer(request))
    # The sid check: a revoked session's access tokens stop working here at once.
    if not await services(request).sessions.is_alive(claims.session_id, claims.subject):
        raise InvalidToken("the access token is no longer valid", reason="session_ended")
    return claims
