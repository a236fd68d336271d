"""The two grants: a provider's id_token exchanged, a refresh token rotated.

Each reads top to bottom: check the request → verify the token → one database call (the
sign-in, the rotation) → mint. Failures are counted by reason in the metrics and logged as one
auth event; the raw token never is, only its fingerprint. A bad id_token raises
`InvalidSubjectToken`, which each endpoint answers with its own status (docs/api.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from identity import logs
from identity.clock import Clock, utc
from identity.errors import (
    AccessDenied,
    AccountConflict,
    IdentityError,
    InvalidGrant,
    InvalidScope,
    InvalidSubjectToken,
    InvalidTarget,
    RateLimited,
)
from identity.metrics import Metrics
from identity.store.models import DEFAULT_SCOPE, new_id
from identity.store.shapes import TokenResponse
from identity.tokens import jws, refresh_tokens
from identity.tokens.access_tokens import AccessTokens, Profile
from identity.tokens.id_tokens import IdTokenVerifier
from identity.tokens.provider_tokens import ProviderTokens

from .audit import Context
from .limits import Attempt, Counter
from .rotation import RotationRequest, Rotations
from .sessions import SessionPolicy
from .sign_in import SignInRequest, SignIns

ACCESS_TOKEN_TYPE_URN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105


def granted_scope(requested: str | None, allowed: str = DEFAULT_SCOPE) -> tuple[str, ...] | None:
    """The scope asked for, when it is within `allowed`; None when none was asked for."""
    if requested is None:
        return None
    wanted = tuple(dict.fromkeys(requested.split()))
    if not wanted or not set(wanted) <= set(allowed.split()):
        raise InvalidScope("the requested scope exceeds what was granted", reason="bad_scope")
    return wanted


class Grants:
    def __init__(
        self,
        *,
        verifier: IdTokenVerifier,
        sign_ins: SignIns,
        rotations: Rotations,
        tokens: AccessTokens,
        budget: Counter,
        policy: SessionPolicy,
        metrics: Metrics,
        clock: Clock = time.time,
    ) -> None:
        self._verifier = verifier
        self._sign_ins = sign_ins
        self._rotations = rotations
        self._tokens = tokens
        self._budget = budget
        self._policy = policy
        self._metrics = metrics
        self._clock = clock

    async def exchange(
        self,
        id_token: str,
        *,
        attempt: Attempt,
        client_id: str,
        context: Context,
        nonce: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
        user_agent: str | None = None,
        provider: str | None = None,
        provider_tokens: ProviderTokens | None = None,
    ) -> TokenResponse:
        async with self._observed("exchange", client_id, context, id_token) as event:
            if audience is not None and audience not in self._tokens.audience:
                raise InvalidTarget("audience is not served here", reason="bad_target")
            granted = " ".join(granted_scope(scope) or DEFAULT_SCOPE.split())
            attempt.about_token(event["token_fingerprint"])
            identity = await self._verifier.verify(id_token, nonce=nonce, provider=provider)
            event["provider"] = identity.provider
            attempt.about_account(identity.provider, identity.account_key)
            now = self._clock()
            refresh_token, refresh_hash = refresh_tokens.new()
            session_id = event["sid"] = new_id()
            # An authenticated client's failure limit is checked inside the sign-in statement
            # (no read of its own); an IP-keyed caller was checked before the request ran.
            lock = attempt.lock()
            result = await self._sign_ins.sign_in(
                SignInRequest(
                    identity=identity,
                    client_id=client_id,
                    scope=granted,
                    audience=audience,
                    session_id=session_id,
                    refresh_hash=refresh_hash,
                    session_expires=utc(now + self._policy.absolute_ttl),
                    user_agent=user_agent[:512] if user_agent else None,
                    now=utc(now),
                    context=context,
                    lock_key=lock.key if lock is not None else None,
                    lock=lock.window if lock is not None else None,
                    budget=self._budget.window(),
                    provider_tokens=provider_tokens,
                )
            )
            if result.outcome == "locked":
                raise attempt.locked(lock)
            if result.outcome == "replayed":
                raise InvalidSubjectToken("replayed")
            if result.outcome == "revoked":
                # Issued before a provider's signal ended its account's sessions (or in an
                # upstream session a logout ended): refused as any invalid id_token is.
                raise InvalidSubjectToken("revoked")
            if result.outcome == "conflict":
                raise AccountConflict(
                    "an account with this email exists; sign in with it, then link this one",
                    reason=result.reason or "account_conflict",
                )
            if result.outcome == "disabled":
                raise AccessDenied("this account is disabled", reason="disabled")
            if result.outcome == "suspended":
                raise AccessDenied("this provider account is suspended", reason="suspended")
            if result.outcome == "rate_limited":
                raise self._over_budget()
            user = result.user
            if user is None:  # "ok" always carries the user
                raise RuntimeError("sign-in returned no user")
            event.update(user_id=user.id, reason="created" if result.created_user else "returning")
            return TokenResponse(
                access_token=self._tokens.mint(
                    subject=user.id,
                    session_id=session_id,
                    client_id=client_id,
                    scope=granted,
                    profile=Profile(
                        user.email, user.email_verified is not None, user.name, user.image
                    ),
                    audience=audience,
                ),
                issued_token_type=ACCESS_TOKEN_TYPE_URN,
                expires_in=self._tokens.ttl,
                refresh_token=refresh_token,
                user=user.public(result.accounts),
            )

    async def refresh(
        self,
        presented: str,
        *,
        attempt: Attempt,
        client_id: str,
        context: Context,
        scope: str | None = None,
    ) -> TokenResponse:
        async with self._observed("refresh", client_id, context, presented) as event:
            attempt.about_token(event["token_fingerprint"])
            wanted = tuple(dict.fromkeys(scope.split())) if scope is not None else None
            if wanted == ():
                raise InvalidScope("the requested scope is empty", reason="bad_scope")
            now = utc(self._clock())
            successor, successor_hash = refresh_tokens.new()
            interval = self._policy.reuse_interval
            lock = attempt.lock()
            result = await self._rotations.rotate(
                RotationRequest(
                    presented_hash=refresh_tokens.digest(presented),
                    client_id=client_id,
                    scope=wanted,
                    successor_hash=successor_hash,
                    sealed=refresh_tokens.seal(successor, parent=presented) if interval else None,
                    interval=interval,
                    now=now,
                    idle_since=self._policy.idle_since(now),
                    context=context,
                    lock_prefix=lock.user_prefix if lock is not None else None,
                    lock=lock.window if lock is not None else None,
                    budget=self._budget.window(),
                )
            )
            if result.user_id is not None:
                attempt.about_user(result.user_id)
                event.update(user_id=result.user_id, sid=result.session_id)
            if result.outcome == "reused":
                opened = refresh_tokens.unseal(result.sealed or b"", parent=presented)
                if opened is None:  # only the parent opens it: never seen, but never trusted
                    raise InvalidGrant("the refresh token is invalid", reason="unsealable")
                successor = opened
            elif result.outcome == "locked":
                raise attempt.locked(lock)
            elif result.outcome == "rate_limited":
                raise self._over_budget()
            elif result.outcome == "bad_scope":
                raise InvalidScope(
                    "the requested scope exceeds what was granted", reason="bad_scope"
                )
            elif result.outcome != "rotated":
                # One answer for unknown, expired, reused, revoked and other clients' tokens.
                raise InvalidGrant(
                    "the refresh token is invalid, expired or revoked", reason=result.outcome
                )
            if result.audience is not None and result.audience not in self._tokens.audience:
                # No longer served here: refused rather than widened to the default.
                raise InvalidGrant(
                    "the refresh token is invalid, expired or revoked", reason="audience_withdrawn"
                )
            event["reason"] = result.outcome
            granted = " ".join(wanted) if wanted is not None else str(result.scope)
            profile = Profile(result.email, result.email_verified, result.name, result.image)
            return TokenResponse(
                access_token=self._tokens.mint(
                    subject=str(result.user_id),
                    session_id=str(result.session_id),
                    client_id=client_id,
                    scope=granted,
                    profile=profile,
                    # The audience its exchange granted, never wider (docs/sessions.md).
                    audience=result.audience,
                ),
                expires_in=self._tokens.ttl,
                refresh_token=successor,
            )

    def _over_budget(self) -> RateLimited:
        window = self._budget.window()
        return RateLimited(
            "too many sign-ins and refreshes for this user; try again later",
            retry_after=window.retry_after if window else 1,
            reason="subject_rate_limited",
        )

    @contextlib.asynccontextmanager
    async def _observed(
        self, kind: str, client_id: str, context: Context, token: str
    ) -> AsyncIterator[dict[str, Any]]:
        """One grant's auth event: the block fills it in; its outcome is counted in the metrics
        and logged as one line (the token only by its fingerprint)."""
        event: dict[str, Any] = {
            "event": kind,
            "client": client_id,
            "request_id": context.request_id,
            "token_fingerprint": jws.fingerprint(token),
        }
        counter = self._metrics.exchanges if kind == "exchange" else self._metrics.refreshes
        try:
            yield event
        except IdentityError as error:
            if error.reason == "reuse_detected":
                self._metrics.reuse.inc()
            counter.labels("failure", error.reason).inc()
            logs.auth_event(**event, outcome="failure", reason=error.reason)
            raise
        counter.labels("success", event.get("reason", "ok")).inc()
        logs.auth_event(**event, outcome="success")
