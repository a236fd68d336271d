"""The signed-in user's own endpoints: /users/me, /userinfo, sessions, email verification."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from . import inputs, pages
from .errors import InvalidToken, InvalidVerificationToken, NotFound
from .profiles import validate_changes
from .web import NO_STORE, authenticate, services, verify_access_token


async def _me(request: Request) -> tuple[dict[str, Any], str]:
    claims = verify_access_token(request, inputs.bearer(request))
    # One round trip: the session is alive (the sid check) and the user with their accounts.
    user = await services(request).sessions.profile(claims.session_id, claims.subject)
    if user is None:  # session ended or user deleted: the token no longer speaks for anyone
        raise InvalidToken("the access token is no longer valid", reason="session_ended")
    return user, claims.session_id


async def get_me(request: Request) -> Response:
    user, _ = await _me(request)
    return JSONResponse(user, headers=NO_STORE)


async def patch_me(request: Request) -> Response:
    claims = await authenticate(request)
    changes = validate_changes(await inputs.json_object(request))
    user = await services(request).profiles.update(claims.subject, changes)
    return JSONResponse(user, headers=NO_STORE)


async def delete_me(request: Request) -> Response:
    claims = await authenticate(request)
    await services(request).profiles.delete(claims.subject)
    return Response(status_code=204)


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


async def request_verification(request: Request) -> Response:
    claims = await authenticate(request)
    await services(request).verification.request(claims.subject)
    return JSONResponse({"status": "sent"}, status_code=202, headers=NO_STORE)


async def verify_email(request: Request) -> Response:
    """JSON in, JSON out; the confirm page's form in, a small HTML page out."""
    verification = services(request).verification
    if request.headers.get("content-type", "").startswith(inputs.FORM):
        form = await inputs.form(request)
        try:
            user = await verification.redeem(form.get("email"), form.get("token"))
        except InvalidVerificationToken:
            return HTMLResponse(pages.result(False), status_code=400, headers=pages.HEADERS)
        return HTMLResponse(pages.result(True, user["email"]), headers=pages.HEADERS)
    body = await inputs.json_object(request)
    user = await verification.redeem(body.get("email"), body.get("token"))
    return JSONResponse(user, headers=NO_STORE)


async def verify_email_page(request: Request) -> Response:
    email = request.query_params.get("email", "")
    token = request.query_params.get("token", "")
    if not email or not token or len(email) > 320 or len(token) > 512:
        return HTMLResponse(pages.result(False), status_code=400, headers=pages.HEADERS)
    return HTMLResponse(pages.confirm(email, token), headers=pages.HEADERS)
