"""OAuth endpoints: /token, /auth/oauth/callback, /revoke, /introspect, /auth/logout."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import inputs, logs
from .accounts import ProviderTokens
from .clients import PUBLIC_CLIENT
from .errors import InvalidRequest, InvalidToken, UnsupportedGrantType
from .web import NO_STORE, access_claims_or_none, authenticate, request_id, services

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
REFRESH = "refresh_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a type name


async def token(request: Request) -> Response:
    s = services(request)
    form = await inputs.form(request)
    client_id = s.clients.authenticate(request, form)
    grant = inputs.required(form, "grant_type")
    if grant == TOKEN_EXCHANGE:
        if inputs.required(form, "subject_token_type") != ID_TOKEN_TYPE:
            raise InvalidRequest(f"subject_token_type must be {ID_TOKEN_TYPE}", reason="bad_type")
        result = await s.grants.exchange(
            inputs.required(form, "subject_token"),
            bad_token=InvalidRequest,
            client_id=client_id,
            request_id=request_id(request),
            nonce=inputs.optional(form, "nonce"),
            audience=inputs.optional(form, "audience"),
            scope=inputs.optional(form, "scope"),
            user_agent=request.headers.get("user-agent"),
        )
    elif grant == REFRESH:
        result = await s.grants.refresh(
            inputs.required(form, "refresh_token"),
            client_id=client_id,
            request_id=request_id(request),
            scope=inputs.optional(form, "scope"),
        )
    else:
        raise UnsupportedGrantType("this grant_type is not supported", reason="bad_grant")
    return JSONResponse(result, headers=NO_STORE)


async def oauth_callback(request: Request) -> Response:
    s = services(request)
    body = await inputs.json_object(request)
    if body.get("provider") != "google":
        raise InvalidRequest('provider must be "google"')
    expires_at = body.get("expires_at")
    if expires_at is not None and (type(expires_at) is not int or expires_at < 0):
        raise InvalidRequest("expires_at must be a non-negative integer")
    id_token = inputs.required(body, "id_token")
    # Provider tokens are stored only encrypted, or not at all (no key configured).
    tokens = ProviderTokens(
        access_token=s.sealer.seal(
            _short(inputs.optional(body, "access_token"), 8192, "access_token")
        ),
        refresh_token=s.sealer.seal(
            _short(inputs.optional(body, "refresh_token"), 8192, "refresh_token")
        ),
        id_token=s.sealer.seal(id_token),
        expires_at=expires_at,
        token_type=_short(inputs.optional(body, "token_type"), 64, "token_type"),
        scope=_short(inputs.optional(body, "scope"), 2048, "scope"),
        session_state=_short(inputs.optional(body, "session_state"), 2048, "session_state"),
    )
    result = await s.grants.exchange(
        id_token,
        bad_token=InvalidToken,
        client_id=PUBLIC_CLIENT,  # SPEC §7.1 puts no client authentication on this endpoint
        request_id=request_id(request),
        nonce=inputs.optional(body, "nonce"),
        user_agent=request.headers.get("user-agent"),
        provider_tokens=tokens,
    )
    return JSONResponse(result, headers=NO_STORE)


async def revoke(request: Request) -> Response:
    """RFC 7009: always 200, whether or not the token meant anything."""
    s = services(request)
    form = await inputs.form(request)
    client_id = s.clients.authenticate(request, form)
    token = inputs.required(form, "token")
    owner = client_id if s.clients.required else None
    ended: str | None = None
    if token.count(".") == 2:  # an access token: end its session
        claims = access_claims_or_none(request, token)
        if claims is not None and (owner is None or claims.client_id == owner):
            ended = (
                claims.session_id
                if await s.sessions.end(claims.subject, claims.session_id)
                else None
            )
    else:
        ended = await s.sessions.revoke_refresh(token, client_id=owner)
    logs.auth_event(
        event="revoke",
        outcome="success" if ended else "noop",
        reason="revoked" if ended else "unknown_token",
        client=client_id,
        request_id=request_id(request),
        sid=ended,
    )
    return JSONResponse({}, headers=NO_STORE)


async def introspect(request: Request) -> Response:
    """RFC 7662: the token's claims when active, else only {"active": false}."""
    s = services(request)
    form = await inputs.form(request)
    s.clients.authenticate(request, form)
    token = inputs.required(form, "token")
    answer: dict[str, Any] | None = None
    if token.count(".") == 2:
        claims = access_claims_or_none(request, token)
        if claims is not None and await s.sessions.is_alive(claims.session_id, claims.subject):
            raw = claims.raw
            answer = {
                "active": True,
                "token_type": "access_token",
                **{
                    k: raw[k]
                    for k in ("iss", "sub", "aud", "exp", "iat", "jti", "sid", "client_id", "scope")
                    if k in raw
                },
            }
    else:
        answer = await s.sessions.introspect_refresh(token)
    return JSONResponse(answer or {"active": False}, headers=NO_STORE)


async def logout(request: Request) -> Response:
    s = services(request)
    claims = await authenticate(request)
    scope = request.query_params.get("scope")
    if scope is None and request.headers.get("content-type", "").startswith(inputs.FORM):
        scope = (await inputs.form(request)).get("scope")
    if scope not in (None, "", "local", "global"):
        raise InvalidRequest('scope must be "local" or "global"')
    if scope == "global":
        await s.sessions.end_all(claims.subject)
    else:
        await s.sessions.end(claims.subject, claims.session_id)
    logs.auth_event(
        event="logout",
        outcome="success",
        reason=scope or "local",
        user_id=claims.subject,
        sid=claims.session_id,
        client=claims.client_id,
        request_id=request_id(request),
    )
    return Response(status_code=204)


def _short(value: str | None, limit: int, name: str) -> str | None:
    if value is not None and len(value) > limit:
        raise InvalidRequest(f"{name} is longer than {limit} characters")
    return value
