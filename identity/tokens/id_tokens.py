"""Verifying a provider's id_token: one code path for every provider (docs/security.md).

    parse (jws)  ->  provider by exact `iss`  ->  alg allowed for it  ->  its key, by kid
    ->  signature  ->  common claims (claims.ClaimRules)  ->  nonce  ->  the provider's rules

The provider is chosen from the strictly parsed but unverified payload; everything after that
uses that provider's own keys and rules, so a token signed by one provider's key and claiming
another's issuer fails its signature check.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx

from identity.clock import Clock, utc
from identity.errors import (
    InvalidRequest,
    InvalidSubjectToken,
    KeysUnavailable,
    TemporarilyUnavailable,
    TokenRejected,
)
from identity.tracing import NO_TRACING, Tracer

from . import jws
from .claims import ClaimRules
from .keysets import Discovery, KeySetCache
from .providers import Provider

# How long past `exp` plus the skew a single-use record is kept: replicas' clocks may disagree
# with the database's by this much before a pruned record could let a token in twice.
REPLAY_MARGIN = 300
MAX_SID_LENGTH = 255


@dataclass(frozen=True, slots=True)
class VerifiedIdentity:
    """An id_token that passed every rule; distinct from an unverified dict of claims."""

    provider: str
    account_key: str
    email: str | None
    email_verified: bool
    authoritative: bool
    name: str | None
    picture: str | None
    expires_at: int
    replay_key: str  # the single-use key (jws.replay_key): the same for every spelling
    # How long the single-use record is kept: as long as any replica could accept the token.
    replay_expires: datetime
    upstream_sid: str | None = None  # the provider's session id (`sid`), when usable
    # When the provider issued it (`iat`): one issued no later than a signal ended the
    # account's sessions is refused (docs/signals.md). None: not checked (tests' own identities).
    issued_at: datetime | None = None


class IdTokenVerifier:
    def __init__(
        self,
        providers: Sequence[Provider],
        key_sets: Mapping[str, KeySetCache],
        *,
        clock: Clock = time.time,
        leeway: int = 60,
        max_age: int = 3600,
    ) -> None:
        self.providers = tuple(providers)
        self._keys = key_sets  # by provider name
        self._clock = clock
        self._leeway = leeway
        self._by_issuer = {iss: p for p in providers for iss in p.issuers}
        self._templated = [p for p in providers if p.issuer_template is not None]
        self._rules = {
            p.name: ClaimRules(
                issuers=p.issuers or None,
                audiences=p.audiences,
                audience_mode="all",
                leeway=leeway,
                max_age=max_age,
                check_azp=True,
            )
            for p in providers
        }

    async def verify(
        self, token: object, *, nonce: str | None = None, provider: str | None = None
    ) -> VerifiedIdentity:
        """Every rule of a provider's id_token: the identity, or InvalidSubjectToken (the rule
        broken is its `reason`), TemporarilyUnavailable when the provider's keys cannot be had,
        InvalidRequest when no provider is configured at all."""
        if not self.providers:
            raise InvalidRequest(
                "token exchange is disabled: no provider is configured "
                "(set IDENTITY_GOOGLE_CLIENT_IDS or another provider's variables)",
                reason="no_provider_configured",
            )
        try:
            return await self.check(token, nonce=nonce, provider=provider)
        except TokenRejected as error:
            raise InvalidSubjectToken(error.reason) from None
        except KeysUnavailable:
            # Fail closed: without the provider's keys nothing is accepted (docs/security.md).
            raise TemporarilyUnavailable(
                "the provider's signing keys are unavailable; try again shortly",
                reason="upstream_keys_unavailable",
                retry_after=30,
            ) from None

    async def check(
        self, token: object, *, nonce: str | None = None, provider: str | None = None
    ) -> VerifiedIdentity:
        """The rules themselves: the identity, or TokenRejected / KeysUnavailable."""
        compact = jws.parse(token)
        claims = compact.claims()
        chosen = self._provider_of(claims)
        if provider is not None and provider != chosen.name:
            raise TokenRejected("provider_mismatch")
        if compact.alg not in chosen.algorithms:
            raise TokenRejected("bad_alg")
        key = await self._keys[chosen.name].get(compact.kid, compact.alg)
        jws.verify(compact, key)
        checked = self._rules[chosen.name].check(claims, self._clock())
        if nonce is not None and not nonce_matches(claims.get("nonce"), nonce):
            raise TokenRejected("nonce_mismatch")
        found = chosen.rules(claims)
        return VerifiedIdentity(
            provider=chosen.name,
            account_key=found.account_key,
            email=found.email,
            email_verified=found.email_verified,
            authoritative=found.authoritative,
            name=found.name,
            picture=found.picture,
            expires_at=checked.expires_at,
            replay_key=jws.replay_key(compact),
            # As long as the token could still be accepted: its exp plus the clock skew, plus a
            # margin for a replica whose clock is behind the database's (docs/sessions.md).
            replay_expires=utc(checked.expires_at + self._leeway + REPLAY_MARGIN),
            upstream_sid=upstream_sid(claims.get("sid")),
            issued_at=utc(checked.issued_at),
        )

    def _provider_of(self, claims: dict[str, object]) -> Provider:
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise TokenRejected("bad_issuer")
        found = self._by_issuer.get(iss)
        if found is not None:
            return found
        for candidate in self._templated:
            if candidate.issued(iss, claims):
                return candidate
        # An unknown issuer is refused like any other bad token; no request follows its URL.
        raise TokenRejected("unknown_issuer")


def upstream_sid(value: object) -> str | None:
    """The provider's session id, kept to end exactly its sessions on a back-channel logout:
    printable text of 1-255 characters, else ignored (the sign-in goes on without it)."""
    if isinstance(value, str) and 0 < len(value) <= MAX_SID_LENGTH and value.isprintable():
        return value
    return None


def nonce_matches(claimed: object, sent: str) -> bool:
    """The token's nonce equals the one sent, raw or as its SHA-256 hex (Apple's native apps)."""
    if not isinstance(claimed, str):
        return False
    try:
        theirs = claimed.encode()
    except UnicodeEncodeError:  # a lone surrogate: not text, so not a match
        return False
    ours = sent.encode()  # the caller's nonce was checked to be printable text
    hashed = hashlib.sha256(ours).hexdigest().encode()
    # Constant time (both compared, no short cut): the nonce is bound to the browser session.
    return hmac.compare_digest(theirs, ours) | hmac.compare_digest(theirs, hashed)


def key_sets(
    providers: Sequence[Provider],
    http: httpx.AsyncClient,
    *,
    clock: Clock,
    production: bool,
    on_fetch: Callable[[str], None] | None = None,
    tracer: Tracer = NO_TRACING,
) -> dict[str, KeySetCache]:
    """One cache per distinct key set (providers sharing a URL share the cache), by provider."""
    caches: dict[str, KeySetCache] = {}
    by_provider: dict[str, KeySetCache] = {}
    for p in providers:
        source = p.jwks_url or f"discovery:{p.discovery}"
        if source not in caches:
            origin: str | Discovery = p.jwks_url or Discovery(
                p.discovery or "", http, clock=clock, require_https=production, tracer=tracer
            )
            caches[source] = KeySetCache(
                origin, http, clock=clock, on_fetch=on_fetch, tracer=tracer
            )
        by_provider[p.name] = caches[source]
    return by_provider
