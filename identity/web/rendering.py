"""Responses: JSON bodies rendered from the model family, and the headers tokens travel with."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from identity.accounts import audit

from . import inputs
from .inputs import JSON

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_response(model: BaseModel, *, status: int = 200, omit_none: bool = False) -> Response:
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
        user_agent=inputs.user_agent(request),
        request_id=request.scope.get("state", {}).get("request_id"),
    )
