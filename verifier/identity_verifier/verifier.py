"""Verifying our access tokens in other Python services: the public API.

    verifier = TokenVerifier("https://id.example.com", "https://api.example.com")
    claims = await verifier.verify(token)        # AccessClaims, or raises InvalidAccessToken
    await verifier.aclose()

It reads the issuer's discovery document, then keeps the key set by the rules the service
applies to providers' keys (Cache-Control honoured, single-flight refetch on an unknown kid, old
keys kept while the issuer is unreachable, at most one fetch per 30 s while it is down or serving
something unusable: `keys.py`). It accepts only `typ: at+jwt` RS256 tokens with the right `iss`
and `aud` that have not expired, parsed as strictly as the service parses every token (`jws.py`).

Two exceptions, and no others: `InvalidAccessToken` (answer 401) whatever the token is, and
`VerifierUnavailable` (answer 503) whatever the issuer serves or fails to serve. Given client
credentials (`revocations=(client_id, client_secret)`) it follows the issuer's revocation feed
(`revocation_feed.py`) and refuses the tokens of ended sessions (reason `revoked`) within `poll`
seconds; without them it does not know about ended sessions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import httpx

from . import jws
from .jws import AccessClaims, Rejected, Rules
from .keys import IssuerKeys, Unavailable, UnknownKey
from .revocation_feed import RevocationFeed

__all__ = ["AccessClaims", "InvalidAccessToken", "TokenVerifier", "VerifierUnavailable"]
logger = logging.getLogger("identity.verifier")


class InvalidAccessToken(Exception):
    """The token is not a valid access token of this issuer (answer 401). `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class VerifierUnavailable(Exception):
    """The issuer's keys could not be obtained (answer 503, not 401)."""


class TokenVerifier:
    def __init__(
        self,
        issuer: str,
        audience: str | Sequence[str],
        *,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        leeway: int = 60,
        refetch_cooldown: float = 30.0,
        revocations: tuple[str, str] | None = None,
        poll: float = 10.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = (audience,) if isinstance(audience, str) else tuple(audience)
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        self._clock = clock
        self._rules = Rules(self.issuer, frozenset(self.audience), leeway)
        self._keys = IssuerKeys(self.issuer, self._http, clock=clock, cooldown=refetch_cooldown)
        self.revocations = (
            RevocationFeed(self.issuer, revocations, http_client=self._http, poll=poll, clock=clock)
            if revocations is not None
            else None
        )

    async def verify(self, token: str) -> AccessClaims:
        """The claims of a valid access token; InvalidAccessToken or VerifierUnavailable."""
        try:
            compact = jws.parse(token)
            claims = jws.verify(compact, await self._keys.get(compact.kid))
            accepted = self._rules.accept(claims, self._clock())
            if self.revocations is not None and await self.revocations.revoked(accepted.session_id):
                raise Rejected("revoked")
            return accepted
        except Rejected as error:
            raise InvalidAccessToken(error.reason) from None
        except UnknownKey:
            raise InvalidAccessToken("unknown_kid") from None
        except Unavailable:
            raise VerifierUnavailable(self.issuer) from None
        except Exception as error:
            # The public contract is two exceptions: a surprise (a bug of ours) must not become
            # a 500 in the caller's service. Logged by type, never by message (it may echo input).
            logger.error("token verification failed unexpectedly: %s", type(error).__name__)
            raise VerifierUnavailable(self.issuer) from None

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()
