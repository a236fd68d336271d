"""OAuth endpoints: /token, /auth/oauth/callback, /revoke, /introspect, /revocations, /auth/logout.

Each is declared with its description (`routes()`) and behind the failure limit, whose attempt
it is handed and tells who the request is about. It reads its body strictly and holds it to its
model (`requests`), authenticates the client where one is required, calls one service, and
renders its model (docs/api.md has every status and error).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from identity import logs
from identity.accounts.grants import Grants
from identity.accounts.limits import Attempt
from identity.accounts.revocations import Revocations
from identity.accounts.sessions import Sessions
from identity.clock import Clock, utc
from identity.errors import InvalidRequest, InvalidSubjectToken, InvalidToken
from identity.store.shapes import (
    Introspection,
    RevocationPage,
    RevokedSession,
    TokenResponse,
)
from identity.tokens import jws
from identity.tokens.provider_tokens import ProviderTokens, Sealer

from . import inputs
from .bearer import Bearer
from .clients import Caller, ClientAuthenticator
from .failure_limit import FailureLimit
from .rendering import NO_STORE, context, json_response
from .requests import (
    CallbackBody,
    PresentedToken,
    RefreshBody,
    TokenExchangeBody,
    token_body,
)
from .routes import BEARER, CLIENT, LIMITED_ERRORS, OBJECT, ApiRoute, Operation, Query

# The claims an active access token's introspection shows: the answer's own fields.
_CLAIMS = tuple(name for name in Introspection.model_fields if name not in ("active", "token_type"))


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
        limit: FailureLimit,
        revocations: Revocations,
        clock: Clock = time.time,
    ) -> None:
        self._revocations = revocations
        self._clock = clock
        self._grants = grants
        self._clients = clients
        self._bearer = bearer
        self._sessions = sessions
        self._sealer = sealer
        self._providers = providers
        self._limit = limit

    def routes(self) -> list[BaseRoute]:
        guarded = self._limit.guarded
        return [
            ApiRoute(
                "/token",
                guarded(self.token),
                method="POST",
                operation=Operation(
                    "Token exchange (RFC 8693) or refresh",
                    {200: TokenResponse},
                    errors=(*LIMITED_ERRORS, 409),
                    security=CLIENT,
                    body=(TokenExchangeBody, RefreshBody),
                    accepts=(inputs.FORM,),
                ),
            ),
            ApiRoute(
                "/auth/oauth/callback",
                guarded(self.callback),
                method="POST",
                operation=Operation(
                    "Token exchange in the NextAuth callback's JSON shape",
                    {200: TokenResponse},
                    errors=(*LIMITED_ERRORS, 409),
                    security=CLIENT,
                    body=(CallbackBody,),
                ),
            ),
            ApiRoute(
                "/revoke",
                guarded(self.revoke),
                method="POST",
                operation=Operation(
                    "Revoke a refresh (or access) token (RFC 7009)",
                    {200: OBJECT},
                    errors=LIMITED_ERRORS,
                    security=CLIENT,
                    body=(PresentedToken,),
                    accepts=(inputs.FORM,),
                ),
            ),
            ApiRoute(
                "/introspect",
                guarded(self.introspect),
                method="POST",
                operation=Operation(
                    "Introspect a token (RFC 7662)",
                    {200: Introspection},
                    errors=LIMITED_ERRORS,
                    security=CLIENT,
                    body=(PresentedToken,),
                    accepts=(inputs.FORM,),
                ),
            ),
            ApiRoute(
                "/revocations",
                guarded(self.revocations),
                method="GET",
                operation=Operation(
                    "Sessions ended whose access tokens may still be unexpired",
                    {200: RevocationPage},
                    errors=LIMITED_ERRORS,
                    security=CLIENT,
                    query=(Query("after"),),
                ),
            ),
            ApiRoute(
                "/auth/logout",
                guarded(self.logout, bearer=True),
                method="POST",
                operation=Operation(
                    "End the current session, or all of them with scope=global",
                    {204: None},
                    errors=LIMITED_ERRORS,
                    security=BEARER,
                    query=(Query("scope", {"type": "string", "enum": ["local", "global"]}),),
                ),
            ),
        ]

    def _caller(self, request: Request, fields: Mapping[str, Any], attempt: Attempt) -> Caller:
        credentials = {k: v for k, v in fields.items() if k in ("client_id", "client_secret")}
        if any(not isinstance(v, str) for v in credentials.values()):
            raise InvalidRequest("client_id and client_secret must be strings")
        caller = self._clients.authenticate(request.headers, credentials)
        if caller.authenticated:
            attempt.client_authenticated(caller.client_id)
        return caller

    async def token(self, request: Request, attempt: Attempt) -> Response:
        form = await inputs.form(request)
        caller = self._caller(request, form, attempt)
        body = token_body(form)
        if isinstance(body, TokenExchangeBody):
            result = await self._grants.exchange(
                body.subject_token,
                attempt=attempt,
                client_id=caller.client_id,
                context=context(request, caller.client_id),
                nonce=body.nonce,
                audience=body.audience,
                scope=body.scope,
                user_agent=inputs.user_agent(request),
            )
        else:
            result = await self._grants.refresh(
                body.refresh_token,
                attempt=attempt,
                client_id=caller.client_id,
                context=context(request, caller.client_id),
                scope=body.scope,
            )
        return json_response(result, omit_none=True)

    async def callback(self, request: Request, attempt: Attempt) -> Response:
        fields = await inputs.json_object(request)
        caller = self._caller(request, fields, attempt)
        body = inputs.parse(CallbackBody, fields, providers=self._providers)
        sealed = self._sealer.enabled
        # Provider tokens are stored only encrypted, or not at all (no key configured); a field
        # absent here keeps its stored value.
        tokens = ProviderTokens(
            access_token=self._sealer.seal(body.access_token),
            refresh_token=self._sealer.seal(body.refresh_token),
            id_token=self._sealer.seal(body.id_token),
            expires_at=body.expires_at if sealed else None,
            token_type=body.token_type if sealed else None,
            scope=body.scope if sealed else None,
            session_state=body.session_state if sealed else None,
        )
        try:
            result = await self._grants.exchange(
                body.id_token,
                attempt=attempt,
                client_id=caller.client_id,
                context=context(request, caller.client_id),
                nonce=body.nonce,
                user_agent=inputs.user_agent(request),
                provider=body.provider,
                provider_tokens=tokens,
            )
        except InvalidSubjectToken as error:
            raise InvalidToken(error.description, reason=error.reason) from None
        return json_response(result, omit_none=True)

    async def revoke(self, request: Request, attempt: Attempt) -> Response:
        """RFC 7009: always 200, whether or not the token meant anything."""
        form = await inputs.form(request)
        caller = self._caller(request, form, attempt)
        token = inputs.parse(PresentedToken, form).token
        attempt.about_token(jws.fingerprint(token))
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

    async def introspect(self, request: Request, attempt: Attempt) -> Response:
        """RFC 7662: the token's claims when active, else only {"active": false}."""
        form = await inputs.form(request)
        caller = self._caller(request, form, attempt)
        token = inputs.parse(PresentedToken, form).token
        attempt.about_token(jws.fingerprint(token))
        answer = Introspection(active=False)
        owner = caller.client_id if caller.authenticated else None
        claims = self._bearer.claims_or_none(token)
        if claims is not None:
            # Another client's access token is inactive to the asking client (RFC 7662 §4: no
            # client learns of the others' tokens), like its refresh tokens are.
            if (owner is None or claims.client_id == owner) and await self._sessions.alive(
                claims.session_id, claims.subject
            ):
                raw = claims.raw
                answer = Introspection(
                    active=True,
                    token_type="access_token",  # noqa: S106 - a token type name
                    **{k: raw[k] for k in _CLAIMS if k in raw},
                )
        elif token.count(".") != 2:
            answer = await self._sessions.introspect_refresh(token, client_id=owner)
        return json_response(answer, omit_none=True)

    async def revocations(self, request: Request, attempt: Attempt) -> Response:
        """The revocation feed (docs/notifications.md): any client may follow it."""
        self._caller(request, {}, attempt)
        revoked, cursor = await self._revocations.after(
            request.query_params.get("after"), utc(self._clock())
        )
        page = [RevokedSession(sid=r.sid, exp=r.exp) for r in revoked]
        return json_response(RevocationPage(revoked=page, next_cursor=cursor))

    async def logout(self, request: Request, attempt: Attempt) -> Response:
        claims = await self._bearer.authenticate(request, attempt)
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
