"""The grants of POST /token: an upstream id_token exchanged, a refresh token rotated."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError, OperationalError

from . import compact, logs
from .accounts import Accounts, ProviderTokens
from .errors import (
    IdentityError,
    InvalidRequest,
    InvalidTarget,
    KeysUnavailable,
    TemporarilyUnavailable,
    UpstreamTokenError,
)
from .keys import KeyManager
from .metrics import Metrics
from .sessions import Mint, Sessions, granted_scope
from .tokens import TokenMinter
from .upstream import IdTokenVerifier, VerifiedIdentity

Clock = Callable[[], float]
ACCESS_TOKEN_TYPE_URN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
T = TypeVar("T")


class Grants:
    def __init__(
        self,
        *,
        verifier: IdTokenVerifier,
        accounts: Accounts,
        sessions: Sessions,
        keys: KeyManager,
        minter: TokenMinter,
        metrics: Metrics,
        clock: Clock = time.time,
    ) -> None:
        self._metrics = metrics
        self._verifier = verifier
        self._accounts = accounts
        self._sessions = sessions
        self._keys = keys
        self._minter = minter
        self._clock = clock

    def _mint(self, client_id: str, audience: str | None) -> Mint:
        def mint(
            subject: str, session_id: str, scope: str, profile: dict[str, Any]
        ) -> tuple[str, int]:
            return self._minter.mint(
                self._keys.view(),
                self._clock(),
                subject=subject,
                session_id=session_id,
                client_id=client_id,
                scope=scope,
                profile=profile,
                audience=audience,
            )

        return mint

    async def exchange(
        self,
        id_token: str,
        *,
        bad_token: type[IdentityError],
        client_id: str,
        request_id: str,
        nonce: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
        user_agent: str | None = None,
        provider_tokens: ProviderTokens | None = None,
    ) -> dict[str, Any]:
        """Verify, sign in, mint; `bad_token` is the error class for an invalid id_token."""
        event: dict[str, Any] = {
            "event": "exchange",
            "client": client_id,
            "request_id": request_id,
            "token_fingerprint": compact.fingerprint(id_token),
            "provider": self._verifier.provider.name,
        }

        async def run() -> Any:
            if audience is not None and audience not in self._minter.audience:
                raise InvalidTarget("audience is not served here", reason="bad_target")
            granted = granted_scope(scope)
            if not self._verifier.provider.audiences:
                raise InvalidRequest(
                    "token exchange is disabled: IDENTITY_GOOGLE_CLIENT_IDS is not set",
                    reason="no_audience_configured",
                )
            identity = await self._verify(id_token, nonce, bad_token)
            return await self._accounts.sign_in(
                identity,
                client_id=client_id,
                user_agent=user_agent,
                scope=granted,
                mint=self._mint(client_id, audience),
                provider_tokens=provider_tokens,
            )

        result = await _observed(event, run, self._metrics.exchanges)
        self._metrics.exchanges.labels(
            "success", "created" if result.created_user else "returning"
        ).inc()
        logs.auth_event(
            **event,
            outcome="success",
            reason="created" if result.created_user else "returning",
            user_id=result.user["id"],
            sid=result.session_id,
        )
        return {
            "access_token": result.access_token,
            "issued_token_type": ACCESS_TOKEN_TYPE_URN,
            "token_type": "Bearer",
            "expires_in": result.expires_in,
            "refresh_token": result.refresh_token,
            "user": result.user,
        }

    async def refresh(
        self, refresh_token: str, *, client_id: str, request_id: str, scope: str | None
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event": "refresh",
            "client": client_id,
            "request_id": request_id,
            "token_fingerprint": compact.fingerprint(refresh_token),
        }

        async def run() -> Any:
            return await self._sessions.rotate(
                refresh_token,
                client_id=client_id,
                scope=scope,
                mint=self._mint(client_id, None),
                request_id=request_id,
            )

        rotation = await _observed(event, run, self._metrics.refreshes)
        self._metrics.refreshes.labels("success", "rotated").inc()
        logs.auth_event(
            **event,
            outcome="success",
            reason="rotated",
            user_id=rotation.user_id,
            sid=rotation.session_id,
        )
        return {
            "access_token": rotation.access_token,
            "token_type": "Bearer",
            "expires_in": rotation.expires_in,
            "refresh_token": rotation.refresh_token,
        }

    async def _verify(
        self, id_token: str, nonce: str | None, bad_token: type[IdentityError]
    ) -> VerifiedIdentity:
        try:
            return await self._verifier.verify(id_token, nonce=nonce)
        except UpstreamTokenError as error:
            # One message for every rule: which rule failed goes to logs and metrics only.
            raise bad_token("the id_token is not valid", reason=error.reason) from None
        except KeysUnavailable:
            raise TemporarilyUnavailable(
                "the provider's signing keys are unavailable; try again shortly",
                reason="upstream_keys_unavailable",
                retry_after=30,
            ) from None


async def _observed(event: dict[str, Any], run: Callable[[], Awaitable[T]], counter: Counter) -> T:
    """Run a grant; count and log its failure; a database outage becomes a 503."""
    try:
        return await run()
    except IdentityError as error:
        counter.labels("failure", error.reason).inc()
        logs.auth_event(**event, outcome="failure", reason=error.reason)
        raise
    except (OperationalError, DBAPIError):
        counter.labels("failure", "database_unavailable").inc()
        logs.auth_event(**event, outcome="failure", reason="database_unavailable")
        raise TemporarilyUnavailable(
            "the service is temporarily unavailable", reason="database_unavailable"
        ) from None
