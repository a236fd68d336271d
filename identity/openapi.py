"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json (SPEC §7.5).

Written out by hand: every endpoint with its request and response schemas, every status it can
answer. schemathesis checks the running service against it in CI (tests/test_openapi.py).
"""

from __future__ import annotations

import json
from typing import Any

Schema = dict[str, Any]

_STR: Schema = {"type": "string"}
_NULLABLE_STR: Schema = {"type": ["string", "null"]}
_ERROR: Schema = {"$ref": "#/components/schemas/Error"}
_FORM = "application/x-www-form-urlencoded"

_MESSAGES = {
    200: "OK",
    202: "Accepted",
    204: "No content",
    304: "Not modified",
    400: "Invalid request",
    401: "Missing or invalid credentials",
    404: "Not found",
    409: "Conflict",
    413: "Body over 64 KiB",
    429: "Rate limited (see Retry-After)",
    503: "Temporarily unavailable (see Retry-After)",
}


def _obj(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def _json(schema: Schema) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _responses(
    ok: int, schema: Schema | None, *errors: int, media: str = "application/json"
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(ok): {"description": _MESSAGES[ok]}}
    if schema is not None:
        responses[str(ok)]["content"] = {media: {"schema": schema}}
    for status in errors:
        responses[str(status)] = {"description": _MESSAGES[status], **_json(_ERROR)}
    return responses


def _form(required: list[str], **properties: Schema) -> dict[str, Any]:
    return {"required": True, "content": {_FORM: {"schema": _obj(required, **properties)}}}


_USER = _obj(
    ["id", "name", "email", "email_verified", "image", "created_at", "updated_at", "accounts"],
    id=_STR,
    name=_NULLABLE_STR,
    email=_NULLABLE_STR,
    email_verified={"type": ["string", "null"], "format": "date-time"},
    image=_NULLABLE_STR,
    created_at={"type": "string", "format": "date-time"},
    updated_at={"type": "string", "format": "date-time"},
    accounts={
        "type": "array",
        "items": _obj(["provider", "provider_account_id"], provider=_STR, provider_account_id=_STR),
    },
)
_TOKENS = _obj(
    ["access_token", "token_type", "expires_in", "refresh_token"],
    access_token=_STR,
    issued_token_type=_STR,
    token_type={"type": "string", "enum": ["Bearer"]},
    expires_in={"type": "integer"},
    refresh_token=_STR,
    user={"$ref": "#/components/schemas/User"},
)
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_CLIENT: list[dict[str, list[str]]] = [
    {"client_basic": []},
    {},
]  # required only when IDENTITY_CLIENTS is set


def _paths() -> dict[str, Any]:
    guarded = (400, 401, 413, 429, 503)
    return {
        "/token": {
            "post": {
                "summary": "Token exchange (RFC 8693) or refresh",
                "security": _CLIENT,
                "requestBody": _form(
                    ["grant_type"],
                    grant_type={
                        "type": "string",
                        "enum": [
                            "urn:ietf:params:oauth:grant-type:token-exchange",
                            "refresh_token",
                        ],
                    },
                    subject_token=_STR,
                    subject_token_type=_STR,
                    refresh_token=_STR,
                    audience=_STR,
                    scope=_STR,
                    nonce=_STR,
                    client_id=_STR,
                    client_secret=_STR,
                ),
                "responses": _responses(
                    200, {"$ref": "#/components/schemas/Tokens"}, *guarded, 409
                ),
            }
        },
        "/auth/oauth/callback": {
            "post": {
                "summary": "Token exchange in the NextAuth callback's JSON shape",
                "requestBody": {
                    "required": True,
                    **_json(
                        _obj(
                            ["provider", "id_token"],
                            provider={"type": "string", "enum": ["google"]},
                            id_token=_STR,
                            access_token=_STR,
                            refresh_token=_STR,
                            expires_at={"type": "integer", "minimum": 0},
                            scope=_STR,
                            token_type=_STR,
                            session_state=_STR,
                            nonce=_STR,
                        )
                    ),
                },
                "responses": _responses(
                    200, {"$ref": "#/components/schemas/Tokens"}, *guarded, 409
                ),
            }
        },
        "/revoke": {
            "post": {
                "summary": "Revoke a refresh (or access) token: RFC 7009",
                "security": _CLIENT,
                "requestBody": _form(
                    ["token"], token=_STR, token_type_hint=_STR, client_id=_STR, client_secret=_STR
                ),
                "responses": _responses(200, {"type": "object"}, *guarded),
            }
        },
        "/introspect": {
            "post": {
                "summary": "Introspect a token: RFC 7662",
                "security": _CLIENT,
                "requestBody": _form(
                    ["token"], token=_STR, token_type_hint=_STR, client_id=_STR, client_secret=_STR
                ),
                "responses": _responses(
                    200,
                    _obj(
                        ["active"],
                        active={"type": "boolean"},
                        sub=_STR,
                        exp={"type": "integer"},
                        iat={"type": "integer"},
                        sid=_STR,
                        client_id=_STR,
                        scope=_STR,
                        token_type=_STR,
                    ),
                    *guarded,
                ),
            }
        },
        "/auth/logout": {
            "post": {
                "summary": "End the current session, or all with scope=global",
                "security": _BEARER,
                "parameters": [
                    {
                        "name": "scope",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["local", "global"]},
                    }
                ],
                "responses": _responses(204, None, *guarded),
            }
        },
        "/users/me": {
            "get": {
                "summary": "The signed-in user",
                "security": _BEARER,
                "responses": _responses(200, {"$ref": "#/components/schemas/User"}, 400, 401, 503),
            },
            "patch": {
                "summary": "Change name, image or email",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    **_json(
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": ["string", "null"], "maxLength": 200},
                                "image": {"type": ["string", "null"], "format": "uri"},
                                "email": {"type": "string", "format": "email"},
                            },
                        }
                    ),
                },
                "responses": _responses(
                    200, {"$ref": "#/components/schemas/User"}, 400, 401, 409, 413, 429, 503
                ),
            },
            "delete": {
                "summary": "Delete the account",
                "security": _BEARER,
                "responses": _responses(204, None, 400, 401, 503),
            },
        },
        "/users/me/sessions": {
            "get": {
                "summary": "The user's live sessions",
                "security": _BEARER,
                "responses": _responses(
                    200,
                    _obj(
                        ["sessions"],
                        sessions={
                            "type": "array",
                            "items": _obj(
                                [
                                    "id",
                                    "created_at",
                                    "last_used_at",
                                    "expires_at",
                                    "user_agent",
                                    "client_id",
                                    "current",
                                ],
                                id=_STR,
                                created_at=_STR,
                                last_used_at=_STR,
                                expires_at=_STR,
                                user_agent=_NULLABLE_STR,
                                client_id=_STR,
                                current={"type": "boolean"},
                            ),
                        },
                    ),
                    400,
                    401,
                    503,
                ),
            }
        },
        "/users/me/sessions/{session_id}": {
            "delete": {
                "summary": "End one of the user's sessions",
                "security": _BEARER,
                "parameters": [
                    {"name": "session_id", "in": "path", "required": True, "schema": _STR}
                ],
                "responses": _responses(204, None, 400, 401, 404, 503),
            }
        },
        "/userinfo": {
            "get": {
                "summary": "OIDC UserInfo",
                "security": _BEARER,
                "responses": _responses(
                    200,
                    _obj(
                        ["sub", "name", "email", "email_verified", "picture"],
                        sub=_STR,
                        name=_NULLABLE_STR,
                        email=_NULLABLE_STR,
                        email_verified={"type": "boolean"},
                        picture=_NULLABLE_STR,
                    ),
                    400,
                    401,
                    503,
                ),
            }
        },
        "/auth/verify-email/request": {
            "post": {
                "summary": "Mail a verification link",
                "security": _BEARER,
                "responses": _responses(202, _obj(["status"], status=_STR), *guarded),
            }
        },
        "/auth/verify-email": {
            "get": {
                "summary": "The confirm page the mailed link opens",
                "parameters": [
                    {"name": "email", "in": "query", "required": True, "schema": _STR},
                    {"name": "token", "in": "query", "required": True, "schema": _STR},
                ],
                "responses": {
                    "200": {
                        "description": "Confirm page",
                        "content": {"text/html": {"schema": _STR}},
                    },
                    "400": {"description": "Bad link", "content": {"text/html": {"schema": _STR}}},
                    "429": {"description": _MESSAGES[429], **_json(_ERROR)},
                },
            },
            "post": {
                "summary": "Redeem a verification token",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _obj(["email", "token"], email=_STR, token=_STR)
                        },
                        _FORM: {"schema": _obj(["email", "token"], email=_STR, token=_STR)},
                    },
                },
                "responses": {
                    "200": {
                        "description": "Verified",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/User"}},
                            "text/html": {"schema": _STR},
                        },
                    },
                    "400": {
                        "description": "Invalid token or request",
                        "content": {
                            "application/json": {"schema": _ERROR},
                            "text/html": {"schema": _STR},
                        },
                    },
                    **{
                        str(s): {"description": _MESSAGES[s], **_json(_ERROR)}
                        for s in (413, 429, 503)
                    },
                },
            },
        },
        "/.well-known/jwks.json": {
            "get": {
                "summary": "Our public signing keys",
                "responses": {
                    **_responses(
                        200, _obj(["keys"], keys={"type": "array", "items": {"type": "object"}})
                    ),
                    "304": {"description": _MESSAGES[304]},
                },
            }
        },
        "/.well-known/openid-configuration": {
            "get": {
                "summary": "OpenID discovery",
                "responses": _responses(
                    200,
                    _obj(
                        ["issuer", "jwks_uri", "token_endpoint"],
                        issuer=_STR,
                        jwks_uri=_STR,
                        token_endpoint=_STR,
                    ),
                ),
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": _responses(200, _obj(["status"], status=_STR)),
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "responses": {
                    "200": {"description": "Ready", **_json(_obj(["status"], status=_STR))},
                    "503": {
                        "description": "Not ready",
                        **_json(
                            _obj(
                                ["status", "reasons"],
                                status=_STR,
                                reasons={"type": "array", "items": _STR},
                            )
                        ),
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": _responses(200, _STR, media="text/plain"),
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": _responses(200, {"type": "object"})}
        },
    }


def document(issuer: str, version: str) -> bytes:
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "identity", "version": version},
        "servers": [{"url": issuer}],
        "paths": _paths(),
        "components": {
            "schemas": {
                "Error": _obj(["error", "error_description"], error=_STR, error_description=_STR),
                "User": _USER,
                "Tokens": _TOKENS,
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "client_basic": {"type": "http", "scheme": "basic"},
            },
        },
    }
    return json.dumps(doc).encode()
