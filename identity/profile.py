"""The signed-in user's own endpoints: /users/me, /userinfo, sessions."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import InvalidToken, NotFound
from .web import NO_STORE, authenticate, services


async def _me(request: Request) -> tuple[dict[str, Any], str]:
    claims = await authenticate(request)
    user = await services(request).accounts.user(claims.subject)
    if user is None:  # deleted: the token no longer speaks for anyone
        raise InvalidToken("the access token is no longer valid", reason="user_deleted")
    return user, claims.session_id


async def users_me(request: Request) -> Response:
    user, _ = await _me(request)
    return JSONResponse(user, headers=NO_STORE)


async def userinfo(request: Request) -> Response:
    user, _ = await _me(request)
    info = {
        "sub": user["id"],
        "name": user["name"],
        "email": user["email"],
        "email_verified": user["email_verified"] is not None,
        "picture": user["image"],
    }
    return JSONResponse(info, headers=NO_STORE)


async def list_sessions(request: Request) -> Response:
    claims = await authenticate(request)
    sessions = await services(request).sessions.list(claims.subject, claims.session_id)
    return JSONResponse({"sessions": sessions}, headers=NO_STORE)


async def end_session(request: Request) -> Response:
    claims = await authenticate(request)
    session_id = request.path_params["session_id"]
    # Another user's session id gets the same 404 as an unknown one.
    if not await services(request).sessions.end(claims.subject, session_id):
        raise NotFound("no such session")
    return Response(status_code=204)
