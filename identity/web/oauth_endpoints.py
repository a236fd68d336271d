"""OAuth endpoints: /token, /auth/oauth/callback, /revoke, /introspect, /auth/logout.

Each reads its request strictly, authenticates the client where one is required, calls one
service, and renders its model (docs/api.md has every status and error).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from identity import logs
from identity.accounts.grants import Grants
from identity.accounts.sessions import Sessions
from identity.accounts.sign_in import ProviderTokens
from identity.errors import (
    InvalidRequest,
    InvalidSubjectToken,
    InvalidToken,
    UnsupportedGrantType,
)
from identity.store.models import Introspection
from identity.tokens import jws
from identity.tokens.provider_tokens import Sealer

from . import inputs
from .bearer import Bearer
from .clients import Caller, ClientAuthenticator
from .rendering import NO_STORE, attempt, context, json_response

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
REFRESH = "refresh_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a type name
MAX_TOKEN = 65_536  # the id_token's own cap (8 KiB) is the verifier's, with its reason code
_CALLBACK_TEXT = {"token_type": 64, "scope": 2048, "session_state": 2048}
_MAX_INT64 = 2**63 - 1


class OAuthEndpoints:
    def __init__(
        self,
        *,
        grants: Grants,
        clients: ClientAuthenticator,
        bearer: Bearer,
        sessions: Sessions,
        sealer: Sealer,
        providers: frozenset[str],
    ) -> None:
        self._grants = grants
        self._clients = clients
        self._bearer = bearer
        self._sessions = sessions
        self._sealer = sealer
        self._providers = providers

    def routes(self) -> list[Route]:
        return [
            Route("/token", self.token, methods=["POST"]),
            Route("/auth/oauth/callback", self.callback, methods=["POST"]),
            Route("/revoke", self.revoke, methods=["POST"]),
            Route("/introspect", self.introspect, methods=["POST"]),
            Route("/auth/logout", self.logout, methods=["POST"]),
        ]

    def _caller(self, request: Request, fields: Mapping[str, Any]) -> Caller:
        credentials = {k: v for k, v in fields.items() if k in ("client_id", "client_secret")}
        if any(not isinstance(v, str) for v in credentials.values()):
            raise InvalidRequest("client_id and client_secret must be strings")
        caller = self._clients.authenticate(request.headers, credentials)
        if caller.authenticated:
            attempt(request).client = caller.client_id  # failures now count per (client, subject)
        return caller

    async def token(self, request: Request) -> Response:
        form = await inputs.form(request)
        caller = self._caller(request, form)
        grant = inputs.required(form, "grant_type")
        if grant == TOKEN_EXCHANGE:
            if inputs.required(form, "subject_token_type") != ID_TOKEN_TYPE:
                raise InvalidRequest(
                    f"subject_token_type must be {ID_TOKEN_TYPE}", reason="bad_type"
                )
            result = await self._grants.exchange(
                inputs.required(form, "subject_token", limit=MAX_TOKEN),
                attempt=attempt(request),
                client_id=caller.client_id,
                context=context(request, caller.client_id),
                nonce=inputs.nonce(form),
                audience=inputs.text(form, "audience"),
                scope=inputs.text(form, "scope"),
                user_agent=request.headers.get("user-agent"),
            )
        elif grant == REFRESH:
            result = await self._grants.refresh(
                inputs.required(form, "refresh_token", limit=MAX_TOKEN),
                attempt=attempt(request),
                client_id=caller.client_id,
                context=context(request, caller.client_id),
                scope=inputs.text(form, "scope"),
            )
        else:
            raise UnsupportedGrantType("this grant_type is not supported", reason="bad_grant")
        return json_response(result, omit_none=True)

    async def callback(self, request: Request) -> Response:
        body = await inputs.json_object(request)
        caller = self._caller(request, body)
        provider = inputs.text(body, "provider", limit=32)
        if provider is not None and provider not in self._providers:
            raise InvalidRequest("provider: not a configured provider")
        expires_at = body.get("expires_at")
        if expires_at is not None and (
            type(expires_at) is not int or not 0 <= expires_at <= _MAX_INT64
        ):
            raise InvalidRequest("expires_at: must be an integer from 0 to 2^63-1")
        id_token = inputs.required(body, "id_token", limit=MAX_TOKEN)
        text = {
            name: inputs.text(body, name, limit=limit) for name, limit in _CALLBACK_TEXT.items()
        }
        # Provider tokens are stored only encrypted, or not at all (no key configured); a field
        # absent here keeps its stored value.
        tokens = ProviderTokens(
            access_token=self._sealer.seal(inputs.text(body, "access_token")),
            refresh_token=self._sealer.seal(inputs.text(body, "refresh_token")),
            id_token=self._sealer.seal(id_token),
            expires_at=expires_at if self._sealer.enabled else None,
            token_type=text["token_type"] if self._sealer.enabled else None,
            scope=text["scope"] if self._sealer.enabled else None,
            session_state=text["session_state"] if self._sealer.enabled else None,
        )
        try:
            result = await self._grants.exchange(
                id_token,
                attempt=attempt(request),
                client_id=caller.client_id,
                context=context(request, caller.client_id),
                nonce=inputs.nonce(body),
                user_agent=request.headers.get("user-agent"),
                provider=provider,
                provider_tokens=tokens,
            )
        except InvalidSubjectToken as error:
            raise InvalidToken(error.description, reason=error.reason) from None
        return json_response(result, omit_none=True)

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: always 200, whether or not the token meant anything."""
        form = await inputs.form(request)
        caller = self._caller(request, form)
        token = inputs.required(form, "token", limit=MAX_TOKEN)
        attempt(request).subject = f"token:{jws.fingerprint(token)}"
        # A client may revoke only its own tokens (RFC 7009 §2.1).
        owner = caller.client_id if caller.authenticated else None
        ended: str | None = None
        ctx = context(request, caller.client_id)
        claims = self._bearer.claims_or_none(token)
        if claims is not None:  # an access token: end its session
            if owner is None or claims.client_id == owner:
                done = await self._sessions.end(
                    claims.subject,
                    claims.session_id,
                    context=ctx,
                    event="session_revoked",
                    reason="revoke_endpoint",
                )
                ended = claims.session_id if done else None
        elif token.count(".") != 2:
            ended = await self._sessions.revoke(token, client_id=owner, context=ctx)
        logs.auth_event(
            event="revoke",
            outcome="success" if ended else "noop",
            reason="revoked" if ended else "unknown_token",
            client=caller.client_id,
            request_id=ctx.request_id,
            sid=ended,
        )
        return JSONResponse({}, headers=NO_STORE)

    async def introspect(self, request: Request) -> Response:
        """RFC 7662: the token's claims when active, else only {"active": false}."""
        form = await inputs.form(request)
        caller = self._caller(request, form)
        token = inputs.required(form, "token", limit=MAX_TOKEN)
        attempt(request).subject = f"token:{jws.fingerprint(token)}"
        answer = Introspection(active=False)
        claims = self._bearer.claims_or_none(token)
        if claims is not None:
            if await self._sessions.alive(claims.session_id, claims.subject):
                raw = claims.raw
                answer = Introspection(
                    active=True,
                    token_type="access_token",  # noqa: S106 - a token type name
                    **{
                        k: raw[k]
                        for k in (
                            "iss",
                            "sub",
                            "aud",
                            "exp",
                            "iat",
                            "jti",
                            "sid",
                            "client_id",
                            "scope",
                        )
                        if k in raw
                    },
                )
        elif token.count(".") != 2:
            owner = caller.client_id if caller.authenticated else None
            answer = await self._sessions.introspect_refresh(token, client_id=owner)
        return json_response(answer, omit_none=True)

    async def logout(self, request: Request) -> Response:
        claims = await self._bearer.authenticate(request)
        scope = request.query_params.get("scope")
        if scope is None and inputs.media_type(request) == inputs.FORM:
            scope = (await inputs.form(request)).get("scope")
        if scope not in (None, "", "local", "global"):
            raise InvalidRequest('scope must be "local" or "global"')
        ctx = context(request, claims.client_id)
        if scope == "global":
            await self._sessions.end_all(
                claims.subject, context=ctx, event="logout", scope="global"
            )
        else:
            await self._sessions.end(
                claims.subject, claims.session_id, context=ctx, event="logout", scope="local"
            )
        logs.auth_event(
            event="logout",
            outcome="success",
            reason=scope or "local",
            user_id=claims.subject,
            sid=claims.session_id,
            client=claims.client_id,
            request_id=ctx.request_id,
        )
        return Response(status_code=204)
