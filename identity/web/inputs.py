"""Reading requests strictly: bodies, fields and credentials, one clear 400 per mistake.

Hostile text stops here (docs/security.md, "Input"): a JSON body whose strings hold a lone
surrogate or a NUL, a form value with a NUL, a repeated form field, a non-object JSON body — each
is a 400 naming the field, so nothing a client sends can reach the database as something it
cannot store (a 500 on SQLite, a false outage on PostgreSQL).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from identity.errors import InvalidRequest, InvalidToken

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MAX_FIELDS = 32
MAX_NONCE = 512


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def form(request: Request) -> dict[str, str]:
    """An urlencoded body as a dict; a repeated parameter is refused (RFC 6749 §3.2)."""
    body = await request.body()
    # RFC 6749 §5.2: a malformed request, a wrong content type included, is invalid_request.
    # A bodiless request is simply missing its parameters.
    if body and media_type(request) != FORM:
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
            raise InvalidRequest(f"parameter {safe_name(name)} is repeated")
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest(f"{safe_name(name)}: must not contain NUL")
        fields[name] = value
    return fields


async def json_object(request: Request) -> dict[str, Any]:
    if media_type(request) != JSON:
        raise InvalidRequest(f"the body must be {JSON}")
    body = await request.body()
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest("the body is not valid UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest("the body must be a JSON object")
    _check_text(value, "")
    return value


def _check_text(value: Any, where: str) -> None:
    """Every string in the document must be storable text: no lone surrogate, no NUL."""
    if isinstance(value, str):
        if "\x00" in value or not _encodable(value):
            raise InvalidRequest(f"{where or 'body'}: not valid text")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = safe_name(key) if _encodable(key) else "(unprintable)"
            if "\x00" in key or not _encodable(key):
                raise InvalidRequest(f"{name}: not a valid field name")
            _check_text(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, f"{where}[{index}]")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text(fields: dict[str, Any], name: str, *, limit: int = 8192) -> str | None:
    """A string field: absent or "" is None; not a string, or too long, is a 400."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    if len(value) > limit:
        raise InvalidRequest(f"{name} is longer than {limit} characters")
    return value


def required(fields: dict[str, Any], name: str, *, limit: int = 8192) -> str:
    value = text(fields, name, limit=limit)
    if value is None:
        raise InvalidRequest(f"{name} is required")
    return value


def nonce(fields: dict[str, Any]) -> str | None:
    value = text(fields, "nonce", limit=MAX_NONCE)
    # A nonce is plain printable text; anything else is the caller's mistake, not a bad token.
    if value is not None and not value.isprintable():
        raise InvalidRequest("nonce: must be printable text")
    return value


def bearer(request: Request) -> str:
    """The Bearer token of the Authorization header; InvalidToken when absent or malformed."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("a Bearer access token is required", reason="missing_token")
    return token.strip()


def safe_name(name: str) -> str:
    # Echo a parameter name only when it is short and printable.
    return repr(name) if len(name) <= 40 and name.isprintable() else "(unprintable)"


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)
