"""Verification of upstream OIDC id_tokens (SPEC §5), one code path for every provider.

A provider is a description (`Provider`); Google is the first. Every rule is enforced here,
explicitly, rather than left to a library default: the token's shape and header in `compact`,
its signature with the key-set cache, then each claim below.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import compact
from .errors import UpstreamTokenError
from .keyset import KeySetCache
from .settings import Settings

Clock = Callable[[], float]
MAX_SUB_LENGTH = 255


@dataclass(frozen=True)
class Provider:
    name: str
    issuers: tuple[str, ...]
    jwks_url: str
    audiences: tuple[str, ...]
    hosted_domains: tuple[str, ...] = ()
    # Whether an address verified by this provider proves ownership (rule 2 of §6 linking).
    authoritative_email_suffixes: tuple[str, ...] = ()

    @classmethod
    def google(cls, settings: Settings) -> Provider:
        return cls(
            name="google",
            issuers=settings.google_issuers,
            jwks_url=settings.google_jwks_url,
            audiences=settings.google_client_ids,
            hosted_domains=settings.google_hosted_domains,
            authoritative_email_suffixes=("@gmail.com",),
        )


@dataclass(frozen=True)
class VerifiedIdentity:
    """Claims of an id_token that passed every rule; distinct from an unverified dict."""

    provider: str
    subject: str
    email: str | None
    email_verified: bool
    email_authoritative: bool
    name: str | None
    picture: str | None
    hosted_domain: str | None
    expires_at: int
    token_hash: str


class IdTokenVerifier:
    def __init__(
        self,
        provider: Provider,
        keys: KeySetCache,
        *,
        clock: Clock = time.time,
        leeway: int = 60,
        max_age: int = 3600,
    ) -> None:
        self.provider = provider
        self._keys = keys
        self._clock = clock
        self._leeway = leeway
        self._max_age = max_age

    async def verify(self, token: object, *, nonce: str | None = None) -> VerifiedIdentity:
        """Return the verified identity, or raise UpstreamTokenError / KeysUnavailable."""
        parsed = compact.parse(token)
        key = await self._keys.get(parsed.kid)
        claims = compact.verify(parsed, key)
        return self._check_claims(claims, parsed.raw, nonce)

    def _check_claims(
        self, claims: dict[str, Any], raw: str, nonce: str | None
    ) -> VerifiedIdentity:
        p = self.provider
        # NOTE: exact string match; no normalisation of trailing slashes or scheme.
        if claims.get("iss") not in p.issuers:
            raise UpstreamTokenError("bad_issuer")
        if not p.audiences:
            raise UpstreamTokenError("no_audience_configured")
        aud = claims.get("aud")
        if isinstance(aud, str):
            audiences = [aud]
        elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
            audiences = aud
        else:
            raise UpstreamTokenError("bad_audience")
        # Every listed audience must be ours: a token also meant for another party is refused.
        if any(a not in p.audiences for a in audiences):
            raise UpstreamTokenError("bad_audience")
        if "azp" in claims and claims["azp"] not in p.audiences:
            raise UpstreamTokenError("bad_azp")

        now = self._clock()
        exp = _required_int(claims, "exp")
        iat = _required_int(claims, "iat")
        nbf = _int_claim(claims, "nbf") if "nbf" in claims else None
        if exp + self._leeway <= now:
            raise UpstreamTokenError("expired")
        if iat - self._leeway > now:
            raise UpstreamTokenError("issued_in_future")
        if now - iat > self._max_age + self._leeway:
            raise UpstreamTokenError("too_old")
        if nbf is not None and nbf - self._leeway > now:
            raise UpstreamTokenError("not_yet_valid")

        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_LENGTH:
            raise UpstreamTokenError("bad_subject")

        hd = claims.get("hd")
        if hd is not None and not isinstance(hd, str):
            raise UpstreamTokenError("bad_hosted_domain")
        if p.hosted_domains and hd not in p.hosted_domains:
            raise UpstreamTokenError("bad_hosted_domain")

        if nonce is not None and not _nonce_matches(claims.get("nonce"), nonce):
            raise UpstreamTokenError("nonce_mismatch")

        email = _email(claims.get("email"))
        # Only the JSON boolean true counts: "true", 1 and the like are not a verification.
        email_verified = claims.get("email_verified") is True and email is not None
        authoritative = email is not None and (
            hd is not None or email.endswith(p.authoritative_email_suffixes)
        )
        return VerifiedIdentity(
            provider=p.name,
            subject=sub,
            email=email,
            email_verified=email_verified,
            email_authoritative=authoritative,
            name=_short_text(claims.get("name"), 200),
            picture=_picture(claims.get("picture")),
            hosted_domain=hd,
            expires_at=exp,
            token_hash=compact.token_hash(raw),
        )


def _required_int(claims: dict[str, Any], name: str) -> int:
    if name not in claims:
        raise UpstreamTokenError(f"missing_{name}")
    return _int_claim(claims, name)


def _int_claim(claims: dict[str, Any], name: str) -> int:
    value = claims[name]
    # bool is an int subclass in Python; a JSON true is not a time.
    if type(value) is not int:
        raise UpstreamTokenError(f"bad_{name}")
    return value


def _nonce_matches(claimed: object, sent: str) -> bool:
    if not isinstance(claimed, str):
        return False
    hashed = hashlib.sha256(sent.encode()).hexdigest()
    # Constant time: the nonce is a secret bound to the browser session.
    return hmac.compare_digest(claimed.encode(), sent.encode()) or hmac.compare_digest(
        claimed.encode(), hashed.encode()
    )


def _email(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    local, sep, domain = email.partition("@")
    if not sep or not local or "." not in domain or len(email) > 320:
        return None
    if any(c.isspace() or ord(c) < 0x20 for c in email):
        return None
    return email


def _short_text(value: object, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    cleaned = "".join(c for c in value if c.isprintable()).strip()
    return cleaned[:limit] or None


def _picture(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 2048:
        return None
    # Only https pictures are kept: anything else would be rendered by apps as an active link.
    return value if value.startswith("https://") and value.isprintable() else None
