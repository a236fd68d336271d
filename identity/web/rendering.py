"""Responses: JSON bodies rendered from the model family, and the headers tokens travel with."""

from __future__ import annotations

from sqlmodel import SQLModel
from starlette.requests import Request
from starlette.responses import Response

from identity.accounts import audit
from identity.accounts.limits import Attempt

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
JSON = "application/json"


def json_response(model: SQLModel, *, status: int = 200, omit_none: bool = False) -> Response:
    """`omit_none`: leave out the top-level members that are None (RFC 7662's inactive answer,
    a refresh's missing `user`); nested objects keep their nulls."""
    omitted = {name for name, value in model if value is None} if omit_none else None
    body = model.model_dump_json(exclude=omitted)
    return Response(body, status_code=status, media_type=JSON, headers=NO_STORE)


def context(request: Request, client_id: str | None = None) -> audit.Context:
    """The request side of an audit event."""
    return audit.Context(
        client_id=client_id,
        ip=(request.scope.get("client") or ("",))[0] or None,
        user_agent=request.headers.get("user-agent"),
        request_id=request.scope.get("state", {}).get("request_id"),
    )


def attempt(request: Request) -> Attempt:
    """What the failure limit counts this request as (a throwaway one when the limit is off)."""
    found = request.scope.get("state", {}).get("attempt")
    return found if isinstance(found, Attempt) else Attempt(ip_key="")
