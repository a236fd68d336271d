"""Our tokens (SPEC §8): RS256 `at+jwt` access tokens and opaque refresh tokens.

`check_access_claims` is the one claims check for our access tokens, used by our protected
endpoints and by `identity.verifier.TokenVerifier` in downstream services.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jws

from . import compact
from .errors import UpstreamTokenError
from .keys import KeyView

Clock = Callable[[], float]
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a type name, not a secret


@dataclass(frozen=True)
class AccessClaims:
    """Claims of one of our access tokens that passed every check."""

    subject: str
    session_id: str
    client_id: str
    expires_at: int
    issued_at: int
    token_id: str
    raw: dict[str, Any]


def profile_claims(user: Any) -> dict[str, Any]:
    """The profile claims of an access token, from a user row or object."""
    return {
        "email": user.email,
        "email_verified": user.email_verified is not None,
        "name": user.name,
        "picture": user.image,
    }


def new_refresh_token() -> tuple[str, str]:
    """A fresh refresh token (256 bits from `secrets`) and the hash that is stored instead."""
    token = secrets.token_urlsafe(32)
    return token, refresh_token_hash(token)


def refresh_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenMinter:
    def __init__(self, *, issuer: str, audience: Sequence[str], ttl: int) -> None:
        self.issuer = issuer
        self.audience = tuple(audience)
        self.ttl = ttl

    def mint(
        self,
        keys: KeyView,
        now: float,
        *,
        subject: str,
        session_id: str,
        client_id: str,
        scope: str,
        profile: dict[str, Any],
        audience: str | None = None,
    ) -> tuple[str, int]:
        key = keys.active
        issued = int(now)
        aud: str | list[str] = audience or (
            self.audience[0] if len(self.audience) == 1 else list(self.audience)
        )
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": aud,
            "exp": issued + self.ttl,
            "iat": issued,
            "jti": secrets.token_urlsafe(16),
            "sid": session_id,
            "client_id": client_id,
            "scope": scope,
            **profile,
        }
        header = {"alg": "RS256", "typ": ACCESS_TOKEN_TYPE, "kid": key.kid}
        payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
        token = jws.serialize_compact(header, payload, key.key, algorithms=["RS256"])
        return token, self.ttl


def check_access_claims(
    claims: dict[str, Any], *, issuer: str, audience: Sequence[str], now: float, leeway: int
) -> AccessClaims:
    """Apply the claim rules of our access tokens; raise UpstreamTokenError(reason)."""
    if claims.get("iss") != issuer:
        raise UpstreamTokenError("bad_issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not any(a in audience for a in audiences):
        raise UpstreamTokenError("bad_audience")
    exp, iat = claims.get("exp"), claims.get("iat")
    if type(exp) is not int or type(iat) is not int:
        raise UpstreamTokenError("malformed")
    if exp + leeway <= now:
        raise UpstreamTokenError("expired")
    if iat - leeway > now:
        raise UpstreamTokenError("issued_in_future")
    values = [claims.get(name) for name in ("sub", "sid", "client_id", "jti")]
    if not all(isinstance(v, str) and v for v in values):
        raise UpstreamTokenError("malformed")
    sub, sid, client_id, jti = (str(v) for v in values)
    return AccessClaims(sub, sid, client_id, exp, iat, jti, claims)


def verify_local(
    token: object, keys: KeyView, *, issuer: str, audience: Sequence[str], now: float, leeway: int
) -> AccessClaims:
    """Verify one of our access tokens against the keys we publish (no network)."""
    parsed = compact.parse(token, typ=ACCESS_TOKEN_TYPE)
    key = keys.published.get(parsed.kid)
    if key is None:
        raise UpstreamTokenError("unknown_kid")
    claims = compact.verify(parsed, key.key)
    return check_access_claims(claims, issuer=issuer, audience=audience, now=now, leeway=leeway)
