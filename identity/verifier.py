"""Verifying our access tokens in other Python services (SPEC §9).

    verifier = TokenVerifier("https://id.example.com", "https://api.example.com")
    claims = await verifier.verify(token)        # AccessClaims, or raises InvalidAccessToken
    await verifier.aclose()

It reads the issuer's discovery document once, then keeps the key set in the same cache the
service uses for Google's keys (Cache-Control honoured, single-flight refetch on an unknown kid,
old keys kept when the issuer is unreachable). It accepts only `typ: at+jwt` RS256 tokens with
the right `iss` and `aud` that have not expired. It does not know about revoked sessions: use
POST /introspect where revocation must take effect before the token expires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import httpx

from . import compact
from .errors import KeysUnavailable, UpstreamTokenError
from .keyset import KeySetCache
from .tokens import ACCESS_TOKEN_TYPE, AccessClaims, check_access_claims

__all__ = ["AccessClaims", "InvalidAccessToken", "TokenVerifier", "VerifierUnavailable"]


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
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = (audience,) if isinstance(audience, str) else tuple(audience)
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        self._clock = clock
        self._leeway = leeway
        self._cooldown = refetch_cooldown
        self._keys: KeySetCache | None = None
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> AccessClaims:
        try:
            parsed = compact.parse(token, typ=ACCESS_TOKEN_TYPE)
            keys = await self._key_set()
            key = await keys.get(parsed.kid)
            claims = compact.verify(parsed, key)
            return check_access_claims(
                claims,
                issuer=self.issuer,
                audience=self.audience,
                now=self._clock(),
                leeway=self._leeway,
            )
        except UpstreamTokenError as error:
            raise InvalidAccessToken(error.reason) from None
        except KeysUnavailable:
            raise VerifierUnavailable(self.issuer) from None

    async def _key_set(self) -> KeySetCache:
        if self._keys is not None:
            return self._keys
        async with self._lock:
            if self._keys is None:
                self._keys = KeySetCache(
                    await self._jwks_uri(),
                    self._http,
                    clock=self._clock,
                    refetch_cooldown=self._cooldown,
                )
            return self._keys

    async def _jwks_uri(self) -> str:
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            response = await self._http.get(url)
            document = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            raise VerifierUnavailable(self.issuer) from None
        # The document must be about this issuer (OpenID Connect Discovery §4.3).
        jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
        if document.get("issuer") != self.issuer or not isinstance(jwks_uri, str):
            raise VerifierUnavailable(self.issuer)
        return jwks_uri

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()
