"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json.

Only the paths are written here; every schema is generated from the model family in
`models.py` (`models_json_schema`), so the document and the responses cannot drift.
schemathesis checks the running service against it (tests/test_openapi.py).

Longer than most modules: one entry per path, declarative; the schemas are generated.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic.json_schema import models_json_schema

from identity.store import models

Schema = dict[str, Any]
_FORM = "application/x-www-form-urlencoded"
_STR: Schema = {"type": "string"}
_MESSAGES = {
    200: "OK",
    202: "Accepted",
    204: "No content",
    304: "Not modified",
    400: "Invalid request",
    401: "Missing or invalid credentials",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Body over 64 KiB",
    429: "Rate limited (see Retry-After)",
    503: "Temporarily unavailable (see Retry-After)",
}
_MODELS = (
    models.ErrorBody,
    models.UserPublic,
    models.UserUpdate,
    models.UserInfo,
    models.SessionList,
    models.TokenResponse,
    models.Introspection,
    models.AdminUser,
    models.AdminUserList,
    models.AdminUserUpdate,
    models.AuditEventList,
)
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_CLIENT: list[dict[str, list[str]]] = [{"client_basic": []}, {}]  # when IDENTITY_CLIENTS is set
_ADMIN: list[dict[str, list[str]]] = [{"client_basic": []}]
GUARDED = (400, 401, 403, 413, 429, 503)


def ref(model: type) -> Schema:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _obj(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def _json(schema: Schema) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: int,
    schema: Schema | None,
    *errors: int,
    security: list[dict[str, list[str]]] | None = None,
    body: dict[str, Any] | None = None,
    parameters: list[Schema] | None = None,
    media: str = "application/json",
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(ok): {"description": _MESSAGES[ok]}}
    if schema is not None:
        responses[str(ok)]["content"] = {media: {"schema": schema}}
    for status in errors:
        responses[str(status)] = {"description": _MESSAGES[status], **_json(ref(models.ErrorBody))}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if security is not None:
        operation["security"] = security
    if body is not None:
        operation["requestBody"] = {"required": True, **body}
    if parameters:
        operation["parameters"] = parameters
    return operation


def _form(required: list[str], **properties: Schema) -> dict[str, Any]:
    client = {"client_id": _STR, "client_secret": _STR}
    return {"content": {_FORM: {"schema": _obj(required, **properties, **client)}}}


def _param(
    name: str, where: str = "query", schema: Schema = _STR, required: bool = False
) -> Schema:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema}


def _paths() -> dict[str, Any]:
    tokens, user = ref(models.TokenResponse), ref(models.UserPublic)
    admin_user = ref(models.AdminUser)
    user_id = [_param("id", "path")]
    grant = {
        "type": "string",
        "enum": ["urn:ietf:params:oauth:grant-type:token-exchange", "refresh_token"],
    }
    callback = _obj(
        ["id_token"],
        provider=_STR,
        id_token=_STR,
        access_token=_STR,
        refresh_token=_STR,
        expires_at={"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        scope=_STR,
        token_type=_STR,
        session_state=_STR,
        nonce=_STR,
    )
    verify_fields = _obj(["email", "token"], email=_STR, token=_STR)
    html = {"content": {"text/html": {"schema": _STR}}}
    return {
        "/token": {
            "post": _op(
                "Token exchange (RFC 8693) or refresh",
                200,
                tokens,
                *GUARDED,
                409,
                security=_CLIENT,
                body=_form(
                    ["grant_type"],
                    grant_type=grant,
                    subject_token=_STR,
                    subject_token_type=_STR,
                    refresh_token=_STR,
                    audience=_STR,
                    scope=_STR,
                    nonce=_STR,
                ),
            )
        },
        "/auth/oauth/callback": {
            "post": _op(
                "Token exchange in the NextAuth callback's JSON shape",
                200,
                tokens,
                *GUARDED,
                409,
                security=_CLIENT,
                body=_json(callback),
            )
        },
        "/revoke": {
            "post": _op(
                "Revoke a refresh (or access) token (RFC 7009)",
                200,
                {"type": "object"},
                *GUARDED,
                security=_CLIENT,
                body=_form(["token"], token=_STR, token_type_hint=_STR),
            )
        },
        "/introspect": {
            "post": _op(
                "Introspect a token (RFC 7662)",
                200,
                ref(models.Introspection),
                *GUARDED,
                security=_CLIENT,
                body=_form(["token"], token=_STR, token_type_hint=_STR),
            )
        },
        "/auth/logout": {
            "post": _op(
                "End the current session, or all of them with scope=global",
                204,
                None,
                *GUARDED,
                security=_BEARER,
                parameters=[
                    _param("scope", schema={"type": "string", "enum": ["local", "global"]})
                ],
            )
        },
        "/users/me": {
            "get": _op("The signed-in user", 200, user, 400, 401, 503, security=_BEARER),
            "patch": _op(
                "Change name or picture; ask for a new email address",
                200,
                user,
                400,
                401,
                403,
                409,
                413,
                429,
                503,
                security=_BEARER,
                body=_json(ref(models.UserUpdate)),
            ),
            "delete": _op("Delete the user", 204, None, 400, 401, 503, security=_BEARER),
        },
        "/users/me/sessions": {
            "get": _op(
                "The user's live sessions",
                200,
                ref(models.SessionList),
                400,
                401,
                503,
                security=_BEARER,
            )
        },
        "/users/me/sessions/{session_id}": {
            "delete": _op(
                "End one of the user's sessions",
                204,
                None,
                400,
                401,
                404,
                503,
                security=_BEARER,
                parameters=[_param("session_id", "path")],
            )
        },
        "/users/me/accounts": {
            "post": _op(
                "Link another provider's account (its id_token)",
                200,
                user,
                400,
                401,
                409,
                413,
                503,
                security=_BEARER,
                body=_json(_obj(["id_token"], id_token=_STR, nonce=_STR)),
            )
        },
        "/users/me/accounts/{provider}/{provider_account_id}": {
            "delete": _op(
                "Unlink an account (never the last one)",
                204,
                None,
                400,
                401,
                404,
                409,
                503,
                security=_BEARER,
                parameters=[_param("provider", "path"), _param("provider_account_id", "path")],
            )
        },
        "/userinfo": {
            "get": _op(
                "OpenID Connect UserInfo",
                200,
                ref(models.UserInfo),
                400,
                401,
                503,
                security=_BEARER,
            )
        },
        "/auth/verify-email/request": {
            "post": _op(
                "Mail a verification link",
                202,
                _obj(["status"], status=_STR),
                *GUARDED,
                security=_BEARER,
            )
        },
        "/auth/verify-email": {
            "get": {
                "summary": "The confirm page the mailed link opens (a button that POSTs)",
                "parameters": [_param("email", required=True), _param("token", required=True)],
                "responses": {
                    "200": {"description": "Confirm page", **html},
                    "400": {"description": "Bad link", **html},
                    **{
                        str(s): {"description": _MESSAGES[s], **_json(ref(models.ErrorBody))}
                        for s in (429, 503)
                    },
                },
            },
            "post": {
                "summary": "Redeem a verification token (JSON, or the confirm page's form)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": verify_fields},
                        _FORM: {"schema": verify_fields},
                    },
                },
                "responses": {
                    "200": {
                        "description": "Verified",
                        "content": {
                            "application/json": {"schema": user},
                            "text/html": {"schema": _STR},
                        },
                    },
                    **{
                        str(s): {
                            "description": _MESSAGES[s],
                            "content": {
                                "application/json": {"schema": ref(models.ErrorBody)},
                                "text/html": {"schema": _STR},
                            },
                        }
                        for s in (400, 403, 409)
                    },
                    **{
                        str(s): {"description": _MESSAGES[s], **_json(ref(models.ErrorBody))}
                        for s in (413, 429, 503)
                    },
                },
            },
        },
        "/admin/users": {
            "get": _op(
                "Users, newest first",
                200,
                ref(models.AdminUserList),
                400,
                401,
                403,
                503,
                security=_ADMIN,
                parameters=[
                    _param("email"),
                    _param("provider"),
                    _param("provider_account_id"),
                    _param("limit", schema={"type": "integer", "minimum": 1, "maximum": 200}),
                    _param("cursor"),
                ],
            )
        },
        "/admin/users/{id}": {
            "get": _op(
                "A user, with accounts and live sessions",
                200,
                admin_user,
                400,
                401,
                403,
                404,
                503,
                security=_ADMIN,
                parameters=user_id,
            ),
            "patch": _op(
                "Disable or enable a user",
                200,
                admin_user,
                400,
                401,
                403,
                404,
                413,
                503,
                security=_ADMIN,
                parameters=user_id,
                body=_json(ref(models.AdminUserUpdate)),
            ),
            "delete": _op(
                "Delete a user",
                204,
                None,
                400,
                401,
                403,
                404,
                503,
                security=_ADMIN,
                parameters=user_id,
            ),
        },
        "/admin/users/{id}/sessions": {
            "delete": _op(
                "End every session of a user",
                204,
                None,
                400,
                401,
                403,
                404,
                503,
                security=_ADMIN,
                parameters=user_id,
            )
        },
        "/admin/events": {
            "get": _op(
                "The audit log, newest first",
                200,
                ref(models.AuditEventList),
                400,
                401,
                403,
                503,
                security=_ADMIN,
                parameters=[
                    _param("user_id"),
                    _param("type"),
                    _param("since", schema={"type": "string", "format": "date-time"}),
                    _param("limit", schema={"type": "integer", "minimum": 1, "maximum": 200}),
                    _param("cursor"),
                ],
            )
        },
        "/.well-known/jwks.json": {
            "get": {
                "summary": "Our public signing keys",
                "responses": {
                    "200": {
                        "description": "OK",
                        **_json(
                            _obj(["keys"], keys={"type": "array", "items": {"type": "object"}})
                        ),
                    },
                    "304": {"description": _MESSAGES[304]},
                },
            }
        },
        "/.well-known/openid-configuration": {
            "get": _op(
                "OpenID discovery",
                200,
                _obj(
                    ["issuer", "jwks_uri", "token_endpoint"],
                    issuer=_STR,
                    jwks_uri=_STR,
                    token_endpoint=_STR,
                ),
            )
        },
        "/healthz": {"get": _op("Liveness", 200, _obj(["status"], status=_STR))},
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
        "/metrics": {"get": _op("Prometheus metrics", 200, _STR, media="text/plain")},
        "/openapi.json": {"get": _op("This document", 200, {"type": "object"})},
    }


def document(issuer: str, version: str) -> bytes:
    _, schemas = models_json_schema(
        [(model, "serialization") for model in _MODELS], ref_template="#/components/schemas/{model}"
    )
    # Request bodies are validated, responses serialized: one schema serves both here.
    return orjson.dumps(
        {
            "openapi": "3.1.0",
            "info": {"title": "identity", "version": version},
            "servers": [{"url": issuer}],
            "paths": _paths(),
            "components": {
                "schemas": schemas["$defs"],
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                    "client_basic": {"type": "http", "scheme": "basic"},
                },
            },
        }
    )
