"""The token exchange: a verified upstream id_token becomes our session and tokens."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

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
from .models import User
from .tokens import TokenMinter
from .upstream import IdTokenVerifier

Clock = Callable[[], float]
ACCESS_TOKEN_TYPE_URN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a type name, not a secret


class Exchanger:
    def __init__(
        self,
        *,
        verifier: IdTokenVerifier,
        accounts: Accounts,
        keys: KeyManager,
        minter: TokenMinter,
        clock: Clock = time.time,
    ) -> None:
        self._verifier = verifier
        self._accounts = accounts
        self._keys = keys
        self._minter = minter
        self._clock = clock

    async def exchange(
        self,
        id_token: str,
        *,
        bad_token: type[IdentityError],
        client_id: str,
        request_id: str,
        nonce: str | None = None,
        audience: str | None = None,
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
        try:
            if audience is not None and audience not in self._minter.audience:
                raise InvalidTarget("audience is not served here", reason="bad_target")
            if not self._verifier.provider.audiences:
                raise InvalidRequest(
                    "token exchange is disabled: IDENTITY_GOOGLE_CLIENT_IDS is not set",
                    reason="no_audience_configured",
                )
            identity = await self._verify(id_token, nonce, bad_token)
            event["subject_fingerprint"] = compact.fingerprint(identity.subject)

            def mint(user: User, session_id: str) -> tuple[str, int]:
                return self._minter.mint(
                    self._keys.view(),
                    self._clock(),
                    subject=user.id,
                    session_id=session_id,
                    client_id=client_id,
                    profile=_profile(user),
                    audience=audience,
                )

            result = await self._accounts.sign_in(
                identity,
                client_id=client_id,
                user_agent=user_agent,
                mint=mint,
                provider_tokens=provider_tokens,
            )
        except IdentityError as error:
            logs.auth_event(**event, outcome="failure", reason=error.reason)
            raise
        except (OperationalError, DBAPIError):
            logs.auth_event(**event, outcome="failure", reason="database_unavailable")
            raise TemporarilyUnavailable(
                "the service is temporarily unavailable", reason="database_unavailable"
            ) from None
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

    async def _verify(
        self, id_token: str, nonce: str | None, bad_token: type[IdentityError]
    ) -> Any:
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


def _profile(user: User) -> dict[str, Any]:
    return {
        "email": user.email,
        "email_verified": user.email_verified is not None,
        "name": user.name,
        "picture": user.image,
    }
