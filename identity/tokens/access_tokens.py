"""Our access tokens (RFC 9068): minted and verified by one object built once in create_app.

Header `{"alg": "RS256", "typ": "at+jwt", "kid"}`; claims `iss sub aud exp iat jti sid client_id
scope`, and the profile claims its scope grants (`SCOPE_CLAIMS`: `email` → `email email_verified`,
`profile` → `name picture`; a token of `scope=openid` carries none). Verification is the same
strict path as a provider's token (`jws.parse`, the shared `ClaimRules`), against the keys we
publish; it never touches the network. Whether the session is still alive is the caller's
question (docs/api.md).

A token that passed verification is remembered by its exact text: a client presents the same
access token on every request of its lifetime, and parsing it and checking its RSA signature
again proves nothing new about the same bytes. A remembered token still has every claim rule
applied on each use (times against the clock), and is forgotten the moment its key is no longer
published. Only tokens that passed are remembered, at most `VERIFIED_CACHE` of them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256

from identity.clock import Clock
from identity.errors import TokenRejected

from . import jws
from .claims import ClaimRules
from .signing_keys import KeyManager

TYPE = "at+jwt"
_STRINGS = ("sid", "client_id", "jti")
VERIFIED_CACHE = 10_000


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """Claims of one of our access tokens that passed every check."""

    subject: str
    session_id: str
    client_id: str
    expires_at: int
    issued_at: int
    token_id: str
    raw: dict[str, Any]


# The profile claims each scope grants (OpenID Connect Core §5.4); nothing else is scoped.
SCOPE_CLAIMS = {"email": ("email", "email_verified"), "profile": ("name", "picture")}


def withheld(scope: str) -> frozenset[str]:
    """The profile claims `scope` does not grant: left out of tokens and /userinfo."""
    granted = scope.split()
    return frozenset(c for s, claims in SCOPE_CLAIMS.items() if s not in granted for c in claims)


@dataclass(frozen=True, slots=True)
class Profile:
    """The profile claims an access token carries."""

    email: str | None
    email_verified: bool
    name: str | None
    picture: str | None


class AccessTokens:
    def __init__(
        self,
        keys: KeyManager,
        *,
        issuer: str,
        audience: Sequence[str],
        ttl: int,
        leeway: int,
        clock: Clock,
    ) -> None:
        self._keys = keys
        self.issuer = issuer
        self.audience = tuple(audience)
        self.ttl = ttl
        self._clock = clock
        self._rules = rules(issuer, audience, leeway)
        self._headers: dict[str, str] = {}  # encoded header segment per kid
        self._verified: dict[str, tuple[str, dict[str, Any]]] = {}  # token -> (kid, claims)

    def mint(
        self,
        *,
        subject: str,
        session_id: str,
        client_id: str,
        scope: str,
        profile: Profile,
        audience: str | None = None,
    ) -> str:
        key = self._keys.view().active
        header = self._headers.get(key.kid)
        if header is None:
            header = jws.encode_segment(orjson.dumps({"alg": "RS256", "typ": TYPE, "kid": key.kid}))
            self._headers[key.kid] = header
        issued = int(self._clock())
        aud = audience or (self.audience[0] if len(self.audience) == 1 else list(self.audience))
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": aud,
            "exp": issued + self.ttl,
            "iat": issued,
            "jti": secrets.token_urlsafe(16),
            "sid": session_id,
            "client_id": client_id,
            "scope": scope,
        }
        # Only what the scope grants: a token of `openid` alone names no address or person.
        scopes = scope.split()
        if "email" in scopes:
            claims["email"] = profile.email
            claims["email_verified"] = profile.email_verified
        if "profile" in scopes:
            claims["name"] = profile.name
            claims["picture"] = profile.picture
        signing_input = f"{header}.{jws.encode_segment(orjson.dumps(claims))}"
        signature = key.private.sign(signing_input.encode("ascii"), PKCS1v15(), SHA256())
        return f"{signing_input}.{jws.encode_segment(signature)}"

    def verify(self, token: object) -> AccessClaims:
        """Signature, `typ`, `iss`, `aud`, times; TokenRejected(reason) otherwise."""
        published = self._keys.view().published
        known = self._verified.get(token) if isinstance(token, str) else None
        if known is not None and known[0] in published:
            # These exact bytes passed parsing and the signature check under a key still
            # published; the claim rules (times included) are applied again below.
            return accept(known[1], self._rules, self._clock())
        compact = jws.parse(token, typ=TYPE)
        if compact.alg != "RS256":
            raise TokenRejected("bad_alg")
        key = published.get(compact.kid)
        if key is None:
            raise TokenRejected("unknown_kid")
        jws.verify(compact, key)
        claims = compact.claims()
        accepted = accept(claims, self._rules, self._clock())
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()  # bounded memory; a miss only costs the full check
        self._verified[cast(str, token)] = (compact.kid, claims)
        return accepted


def rules(issuer: str, audience: Sequence[str], leeway: int) -> ClaimRules:
    """The claim rules of our access tokens, for `AccessTokens` and downstream verifiers."""
    return ClaimRules(
        issuers=frozenset({issuer}),
        audiences=frozenset(audience),
        audience_mode="any",
        leeway=leeway,
    )


def accept(claims: dict[str, Any], rules: ClaimRules, now: float) -> AccessClaims:
    """The claims of a signature-checked access token, held to `rules`."""
    checked = rules.check(claims, now)
    values = [claims.get(name) for name in _STRINGS]
    if not all(isinstance(v, str) and v for v in values):
        raise TokenRejected("malformed")
    sid, client_id, jti = (str(v) for v in values)
    return AccessClaims(
        checked.subject, sid, client_id, checked.expires_at, checked.issued_at, jti, claims
    )
