"""HTTP endpoints: parse, call one service, render."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import inputs
from .accounts import ProviderTokens
from .clients import PUBLIC_CLIENT
from .errors import InvalidRequest, InvalidToken, UnsupportedGrantType, UpstreamTokenError
from .tokens import AccessClaims, verify_local

if TYPE_CHECKING:
    from .app import Services

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a type name, not a secret
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a type name, not a secret
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


async def token(request: Request) -> Response:
    s = services(request)
    form = await inputs.form(request)
    client_id = s.clients.authenticate(request, form)
    grant = inputs.required(form, "grant_type")
    if grant != TOKEN_EXCHANGE:
        raise UnsupportedGrantType("this grant_type is not supported", reason="bad_grant")
    if inputs.required(form, "subject_token_type") != ID_TOKEN_TYPE:
        raise InvalidRequest(f"subject_token_type must be {ID_TOKEN_TYPE}", reason="bad_type")
    result = await s.exchanger.exchange(
        inputs.required(form, "subject_token"),
        bad_token=InvalidRequest,
        client_id=client_id,
        request_id=_request_id(request),
        nonce=inputs.optional(form, "nonce"),
        audience=inputs.optional(form, "audience"),
        user_agent=request.headers.get("user-agent"),
    )
    return JSONResponse(result, headers=NO_STORE)


async def oauth_callback(request: Request) -> Response:
    s = services(request)
    body = await inputs.json_object(request)
    if body.get("provider") != "google":
        raise InvalidRequest('provider must be "google"')
    expires_at = body.get("expires_at")
    if expires_at is not None and (type(expires_at) is not int or expires_at < 0):
        raise InvalidRequest("expires_at must be a non-negative integer")
    tokens = ProviderTokens(
        # Provider tokens themselves are not stored: see README, "Provider tokens".
        expires_at=expires_at,
        token_type=_short(inputs.optional(body, "token_type"), 64, "token_type"),
        scope=_short(inputs.optional(body, "scope"), 2048, "scope"),
        session_state=_short(inputs.optional(body, "session_state"), 2048, "session_state"),
    )
    for name in ("access_token", "refresh_token"):
        inputs.optional(body, name)  # type-checked even though not stored
    result = await s.exchanger.exchange(
        inputs.required(body, "id_token"),
        bad_token=InvalidToken,
        client_id=PUBLIC_CLIENT,  # SPEC §7.1 does not put client auth on this endpoint
        request_id=_request_id(request),
        nonce=inputs.optional(body, "nonce"),
        user_agent=request.headers.get("user-agent"),
        provider_tokens=tokens,
    )
    return JSONResponse(result, headers=NO_STORE)


async def jwks(request: Request) -> Response:
    s = services(request)
    view = s.keys.view()
    headers = {
        "Cache-Control": f"public, max-age={s.settings.jwks_max_age}",
        "ETag": view.etag,
    }
    if view.etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(view.jwks, media_type="application/json", headers=headers)


async def discovery(request: Request) -> Response:
    s = services(request)
    headers = {"Cache-Control": f"public, max-age={s.settings.jwks_max_age}"}
    return Response(s.discovery, media_type="application/json", headers=headers)


async def users_me(request: Request) -> Response:
    s = services(request)
    claims = _authenticate(request)
    user = await s.accounts.user_with_accounts(claims.subject, claims.session_id)
    if user is None:
        # The user was deleted or the session ended: the token no longer speaks for anyone.
        raise InvalidToken("the access token is no longer valid", reason="session_ended")
    return JSONResponse(user, headers=NO_STORE)


async def userinfo(request: Request) -> Response:
    s = services(request)
    claims = _authenticate(request)
    user = await s.accounts.user_with_accounts(claims.subject, claims.session_id)
    if user is None:
        raise InvalidToken("the access token is no longer valid", reason="session_ended")
    info = {
        "sub": user["id"],
        "name": user["name"],
        "email": user["email"],
        "email_verified": user["email_verified"] is not None,
        "picture": user["image"],
    }
    return JSONResponse(info, headers=NO_STORE)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    s = services(request)
    reasons = []
    if not await s.database.ping():
        reasons.append("database unreachable")
    if not s.keys.ring.keys:
        reasons.append("no signing key loaded")
    if reasons:
        return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
    return JSONResponse({"status": "ready"})


def _authenticate(request: Request) -> AccessClaims:
    s = services(request)
    token = inputs.bearer(request)
    try:
        return verify_local(
            token,
            s.keys.view(),
            issuer=s.settings.issuer,
            audience=s.settings.access_audience,
            now=s.clock(),
            leeway=s.settings.clock_skew,
        )
    except UpstreamTokenError as error:
        raise InvalidToken("the access token is not valid", reason=error.reason) from None


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def _short(value: str | None, limit: int, name: str) -> str | None:
    if value is not None and len(value) > limit:
        raise InvalidRequest(f"{name} is longer than {limit} characters")
    return value


def discovery_document(issuer: str, client_auth: bool) -> bytes:
    document: dict[str, Any] = {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "grant_types_supported": [TOKEN_EXCHANGE],
        "response_types_supported": ["none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": (
            ["client_secret_basic", "client_secret_post"] if client_auth else ["none"]
        ),
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "jti",
            "sid",
            "client_id",
            "email",
            "email_verified",
            "name",
            "picture",
        ],
        "scopes_supported": ["openid", "email", "profile"],
    }
    return json.dumps(document, indent=2).encode()


routes = [
    Route("/token", token, methods=["POST"]),
    Route("/auth/oauth/callback", oauth_callback, methods=["POST"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    Route("/.well-known/openid-configuration", discovery, methods=["GET"]),
    Route("/users/me", users_me, methods=["GET"]),
    Route("/userinfo", userinfo, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
