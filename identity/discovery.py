"""Public documents and probes: JWKS, OpenID discovery, health and readiness."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .metrics import CONTENT_TYPE
from .web import services


async def jwks(request: Request) -> Response:
    s = services(request)
    view = s.keys.view()  # precomputed bytes and ETag, rebuilt only when the keys change
    headers = {"Cache-Control": f"public, max-age={s.settings.jwks_max_age}", "ETag": view.etag}
    if view.etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(view.jwks, media_type="application/json", headers=headers)


async def openid_configuration(request: Request) -> Response:
    s = services(request)
    headers = {"Cache-Control": f"public, max-age={s.settings.jwks_max_age}"}
    return Response(s.discovery, media_type="application/json", headers=headers)


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


async def openapi(request: Request) -> Response:
    return Response(services(request).openapi, media_type="application/json")


async def metrics(request: Request) -> Response:
    body = services(request).metrics.render()
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def document(issuer: str, client_auth: bool) -> bytes:
    """The discovery document (RFC 8414 / OpenID Connect Discovery), encoded once."""
    auth_methods = ["client_secret_basic", "client_secret_post"] if client_auth else ["none"]
    doc: dict[str, Any] = {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/token",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "end_session_endpoint": f"{issuer}/auth/logout",
        "grant_types_supported": [
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "refresh_token",
        ],
        "response_types_supported": ["none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "scopes_supported": ["openid", "email", "profile"],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "jti",
            "sid",
            "client_id",
            "scope",
            "email",
            "email_verified",
            "name",
            "picture",
        ],
    }
    return json.dumps(doc, indent=2).encode()
