"""Parsing request bodies and credentials strictly, with one clear error per mistake."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from .errors import InvalidRequest, InvalidToken

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MAX_FIELDS = 32


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def form(request: Request) -> dict[str, str]:
    """An urlencoded body as a dict; a repeated parameter is refused (RFC 6749 §3.2)."""
    body = await request.body()
    # RFC 6749 §5.2: a malformed request, a wrong content type included, is invalid_request.
    # A bodiless request is simply missing its parameters.
    if _media_type(request) != FORM and body:
        raise InvalidRequest(f"the body must be {FORM}")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the body is not valid UTF-8 form data") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise InvalidRequest(f"parameter {_safe(name)} is repeated")
        fields[name] = value
    return fields


async def json_object(request: Request) -> dict[str, Any]:
    if _media_type(request) != JSON:
        raise InvalidRequest(f"the body must be {JSON}")
    body = await request.body()
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest("the body is not valid UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest("the body must be a JSON object")
    return value


def required(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None or value == "":
        raise InvalidRequest(f"{name} is required")
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return value


def optional(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return value


def bearer(request: Request) -> str:
    """The Bearer token of the Authorization header; InvalidToken when absent or malformed."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("a Bearer access token is required", reason="missing_token")
    return token.strip()


def _safe(name: str) -> str:
    # Echo a parameter name only when it is short and printable.
    return repr(name) if len(name) <= 40 and name.isprintable() else "(unprintable)"


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)
