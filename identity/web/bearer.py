"""The caller of a protected endpoint: their access token, verified, their session alive.

Protected endpoints accept only our own `typ: at+jwt` tokens, and only while the session they
were minted for exists: a revoked session's or a deleted user's token stops working here at
once, though services verifying offline accept it until its `exp` (docs/api.md).
"""

from __future__ import annotations

from starlette.requests import Request

from identity.accounts.limits import Attempt
from identity.accounts.sessions import Sessions
from identity.errors import InvalidToken, TokenRejected
from identity.tokens.access_tokens import AccessClaims, AccessTokens

from . import inputs


class Bearer:
    def __init__(self, tokens: AccessTokens, sessions: Sessions) -> None:
        self._tokens = tokens
        self._sessions = sessions

    def verify(self, token: str) -> AccessClaims:
        """Signature, `typ`, `iss`, `aud`, times; InvalidToken otherwise. No session check."""
        try:
            return self._tokens.verify(token)
        except TokenRejected as error:
            raise InvalidToken("the access token is not valid", reason=error.reason) from None

    def claims_or_none(self, token: str) -> AccessClaims | None:
        """The claims when `token` is one of our access tokens (for /revoke, /introspect)."""
        if token.count(".") != 2:  # refresh tokens are opaque, never three segments
            return None
        try:
            return self.verify(token)
        except InvalidToken:
            return None

    def caller(self, request: Request, attempt: Attempt) -> AccessClaims:
        """The request's access token, verified (no session check); from then on the failure
        limit counts this request as its user's (client, `sub`), not its IP's."""
        claims = self.verify(inputs.bearer(request))
        attempt.bearer_verified(claims.client_id, claims.subject)
        return claims

    async def authenticate(self, request: Request, attempt: Attempt) -> AccessClaims:
        """The caller's access token, verified, whose session is still alive."""
        claims = self.caller(request, attempt)
        if not await self._sessions.alive(claims.session_id, claims.subject):
            raise InvalidToken("the access token is no longer valid", reason="session_ended")
        return claims
