"""Reading requests strictly: bodies and credentials, one clear 400 per mistake.

Hostile text stops here (docs/security.md, "Input"): a JSON body whose strings hold a lone
surrogate or a NUL, a form value with a NUL, a repeated form field, a non-object JSON body — each
is a 400 naming the field, so nothing a client sends can reach the database as something it
cannot store (a 500 on SQLite, a false outage on PostgreSQL).

What a body must then hold is its model's (requests.py): `parse` holds the fields to it and
answers the first bad one, in the model's order, naming it and never echoing its value. A
field's own check says what is wrong: a `Refusal` is the whole answer, a plain ValueError's
message follows the field's name. `Text` is the check of a text field, `Body` every model's base.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema
from starlette.requests import Request

from identity.errors import IdentityError, InvalidRequest, InvalidToken

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MAX_FIELDS = 32
MAX_TEXT = 8192
B = TypeVar("B", bound=BaseModel)


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


def bearer(request: Request) -> str:
    """The Bearer token of the Authorization header; InvalidToken when absent or malformed."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("a Bearer access token is required", reason="missing_token")
    return token.strip()


# C0 controls, DEL and C1 controls (a header's bytes 0x80-0x9F arrive as U+0080-U+009F).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def user_agent(request: Request) -> str | None:
    """The User-Agent as stored and shown (sessions, audit events): control characters removed,
    C0 and C1 alike — they could rewrite a terminal or a log viewer that shows it — at most 512
    characters; None when nothing is left."""
    raw = request.headers.get("user-agent")
    if not raw:
        return None
    return _CONTROLS.sub("", raw)[:512] or None


def safe_name(name: str) -> str:
    # Echo a parameter name only when it is short and printable.
    return repr(name) if len(name) <= 40 and name.isprintable() else "(unprintable)"


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


class Refusal(ValueError):
    """A field's check chose the whole answer (its class, description and reason)."""

    def __init__(self, error: IdentityError) -> None:
        super().__init__(error.description)
        self.error = error


def parse(model: type[B], fields: dict[str, Any], **context: Any) -> B:
    """`fields` held to `model`; the first bad field is a 400 naming it (never its value)."""
    try:
        return model.model_validate(fields, context=context)
    except ValidationError as error:
        first = error.errors(include_input=False, include_url=False)[0]
    name = str(first["loc"][0]) if first["loc"] else "body"
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, Refusal):
        raise cause.error
    if first["type"] == "extra_forbidden":
        raise InvalidRequest(f"unknown field: {safe_name(name)}")
    if isinstance(cause, ValueError):
        raise InvalidRequest(f"{name}: {cause}")
    raise InvalidRequest(f"{name}: not a valid value")


@dataclass(frozen=True, slots=True)
class Text:
    """A text field as the endpoints read it: absent, null or "" is no value; anything but a
    string, or longer than `limit`, is refused (`lenient`: reads as no value instead).
    `limit=None`: a field only documented here (client credentials, which client
    authentication reads first)."""

    limit: int | None = MAX_TEXT
    required: bool = False
    printable: bool = False
    lenient: bool = False

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.with_info_before_validator_function(self._read, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return (
            {"type": "string"}
            if self.limit is None
            else {"type": "string", "maxLength": self.limit}
        )

    def _read(self, value: Any, info: ValidationInfo) -> str | None:
        name = info.field_name
        if self.lenient and not (isinstance(value, str) and len(value) <= (self.limit or 0)):
            return None
        if value is None or value == "":
            if self.required:
                raise Refusal(InvalidRequest(f"{name} is required"))
            return None
        if not isinstance(value, str):
            raise Refusal(InvalidRequest(f"{name} must be a string"))
        if self.limit is not None and len(value) > self.limit:
            raise Refusal(InvalidRequest(f"{name} is longer than {self.limit} characters"))
        # A nonce is plain printable text; anything else is the caller's mistake, not a bad token.
        if self.printable and not value.isprintable():
            raise Refusal(InvalidRequest(f"{name}: must be printable text"))
        return value


def _no_null(schema: dict[str, Any]) -> None:
    # A default of "no value" is not a value a client could send: leave it out of the schema.
    for member in schema.get("properties", {}).values():
        if member.get("default", ...) is None:
            del member["default"]


class Body(BaseModel):
    """A request body. Unknown members are ignored unless a model forbids them; a required
    field that is absent is checked like one sent empty, so its own check names it, in order."""

    model_config = ConfigDict(frozen=True, json_schema_extra=_no_null)

    _required: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._required = tuple(n for n, f in cls.model_fields.items() if f.is_required())

    @model_validator(mode="before")
    @classmethod
    def _absent_is_empty(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        absent = {name: None for name in cls._required if name not in data}
        return {**data, **absent} if absent else data
