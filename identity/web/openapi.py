"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json.

Generated from the routes, as Starlette's own `schemas.py` walks `app.routes`: each `ApiRoute`
carries its `Operation` (routes.py), mounts are walked with their prefix, and a route without an
operation is an error, so no route goes undescribed. Every schema is generated from the models
(`models_json_schema`): request bodies as they are validated, answers as they are serialized, so
the document and the service cannot drift. schemathesis checks the running service against it
(tests/test_openapi.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount

from .inputs import JSON
from .responses import ErrorBody
from .routes import OBJECT, STRING, ApiRoute, Body, Operation, Schema

Mode = Literal["validation", "serialization"]
Refs = Mapping[tuple[Any, Mode], Schema]  # a model as validated or serialized: its $ref
_HTML = "text/html"
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
THIS_DOCUMENT = Operation("This document", {200: OBJECT})


def endpoints(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, ApiRoute]]:
    """Every route with its full path template, mounts walked; TypeError for an undescribed one."""
    for item in routes:
        if isinstance(item, Mount) and item.routes:
            yield from endpoints(item.routes, prefix + item.path)
        elif isinstance(item, ApiRoute):
            yield prefix + item.path_format, item
        else:
            raise TypeError(f"{item!r} has no operation: declare it as an ApiRoute")


def route(routes: Sequence[BaseRoute], *, issuer: str, version: str) -> ApiRoute:
    """GET /openapi.json: the document of `routes` and of itself, made once."""
    body = b""

    async def serve(request: Request) -> Response:
        return Response(body, media_type=JSON)

    this = ApiRoute("/openapi.json", serve, method="GET", operation=THIS_DOCUMENT)
    body = document([*routes, this], issuer=issuer, version=version)
    return this


def document(routes: Sequence[BaseRoute], *, issuer: str, version: str) -> bytes:
    """The OpenAPI document of `routes`, encoded."""
    described = list(endpoints(routes))
    models: dict[tuple[type[BaseModel], Mode], None] = {(ErrorBody, "serialization"): None}
    for _, api in described:
        models.update(dict.fromkeys((m, "validation") for m in api.operation.body))
        for answer in api.operation.returns.values():
            if isinstance(answer, type):
                models[(answer, "serialization")] = None
    # Request bodies are validated, answers serialized: each schema as the service uses it.
    refs, schemas = models_json_schema(list(models), ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for path, api in described:
        paths.setdefault(path, {})[api.method.lower()] = _operation(api, refs)
    return orjson.dumps(
        {
            "openapi": "3.1.0",
            "info": {"title": "identity", "version": version},
            "servers": [{"url": issuer}],
            "paths": paths,
            "components": {
                "schemas": schemas["$defs"],
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                    "client_basic": {"type": "http", "scheme": "basic"},
                },
            },
        }
    )


def _operation(api: ApiRoute, refs: Refs) -> dict[str, Any]:
    op = api.operation
    described: dict[str, Any] = {"summary": op.summary, "responses": _responses(op, refs)}
    if op.security is not None:
        described["security"] = [dict(requirement) for requirement in op.security]
    parameters = [_parameter(name, "path", None, True) for name in api.param_convertors]
    parameters += [_parameter(q.name, "query", q.schema, q.required) for q in op.query]
    if parameters:
        described["parameters"] = parameters
    if op.body:
        variants = [refs[(model, "validation")] for model in op.body]
        schema = variants[0] if len(variants) == 1 else {"oneOf": variants}
        content = {media: {"schema": schema} for media in op.accepts}
        described["requestBody"] = {"required": True, "content": content}
    return described


def _responses(op: Operation, refs: Refs) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for status in dict.fromkeys([*op.returns, *op.errors, *op.pages]):
        content: dict[str, Any] = {}
        if status in op.returns:
            if op.returns[status] is not None:
                content[op.media] = {"schema": _schema(op.returns[status], refs)}
        elif status in op.errors:
            content[JSON] = {"schema": refs[(ErrorBody, "serialization")]}
        if status in op.pages:
            content[_HTML] = {"schema": STRING}
        answers[str(status)] = {"description": op.notes.get(status) or _MESSAGES[status]}
        if content:
            answers[str(status)]["content"] = content
    return answers


def _schema(body: Body, refs: Refs) -> Schema:
    if isinstance(body, type):
        return refs[(body, "serialization")]
    return body or {}


def _parameter(name: str, where: str, schema: Schema | None, required: bool) -> Schema:
    return {"name": name, "in": where, "required": required, "schema": schema or STRING}
