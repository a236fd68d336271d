"""The signed-in user's endpoints: /users/me (and its sessions and accounts), /userinfo, and
email verification (docs/api.md); the /auth/* ones behind the failure limit."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute

from identity import logs
from identity.accounts.email_verification import MAX_TOKEN_LENGTH, EmailVerification
from identity.accounts.limits import Attempt
from identity.accounts.sessions import Sessions
from identity.accounts.users import Users
from identity.errors import (
    Conflict,
    IdentityError,
    InvalidToken,
    InvalidVerificationToken,
    MailDisabled,
    NotFound,
)
from identity.store.shapes import UserPublic
from identity.tokens import jws
from identity.tokens.access_tokens import withheld
from identity.tokens.id_tokens import IdTokenVerifier

from . import inputs, pages
from .bearer import Bearer
from .failure_limit import FailureLimit
from .rendering import NO_STORE, context, json_response
from .requests import LinkBody, UserUpdate, VerifyEmailBody
from .responses import SessionList, UserInfo
from .routes import BEARER, LIMITED_ERRORS, STRING, ApiRoute, Operation, Query, obj

# A bad or ended Bearer token, the failure limit, a database outage.
_SIGNED_IN = (400, 401, 429, 503)


class UserEndpoints:
    def __init__(
        self,
        *,
        bearer: Bearer,
        sessions: Sessions,
        users: Users,
        verification: EmailVerification,
        verifier: IdTokenVerifier,
        limit: FailureLimit,
    ) -> None:
        self._bearer = bearer
        self._sessions = sessions
        self._users = users
        self._verification = verification
        self._verifier = verifier
        self._limit = limit

    def routes(self) -> list[BaseRoute]:
        guarded = self._limit.guarded
        return [
            ApiRoute(
                "/users/me",
                guarded(self.get_me, bearer=True),
                method="GET",
                operation=Operation(
                    "The signed-in user", {200: UserPublic}, errors=_SIGNED_IN, security=BEARER
                ),
            ),
            ApiRoute(
                "/users/me",
                guarded(self.patch_me, bearer=True),
                method="PATCH",
                operation=Operation(
                    "Change name or picture; ask for a new email address",
                    {200: UserPublic},
                    errors=(*_SIGNED_IN, 403, 409, 413),
                    security=BEARER,
                    body=(UserUpdate,),
                ),
            ),
            ApiRoute(
                "/users/me",
                guarded(self.delete_me, bearer=True),
                method="DELETE",
                operation=Operation(
                    "Delete the user", {204: None}, errors=_SIGNED_IN, security=BEARER
                ),
            ),
            ApiRoute(
                "/userinfo",
                guarded(self.userinfo, bearer=True),
                method="GET",
                operation=Operation(
                    "OpenID Connect UserInfo", {200: UserInfo}, errors=_SIGNED_IN, security=BEARER
                ),
            ),
            ApiRoute(
                "/users/me/sessions",
                guarded(self.list_sessions, bearer=True),
                method="GET",
                operation=Operation(
                    "The user's live sessions",
                    {200: SessionList},
                    errors=_SIGNED_IN,
                    security=BEARER,
                ),
            ),
            ApiRoute(
                "/users/me/sessions/{session_id}",
                guarded(self.end_session, bearer=True),
                method="DELETE",
                operation=Operation(
                    "End one of the user's sessions",
                    {204: None},
                    errors=(*_SIGNED_IN, 404),
                    security=BEARER,
                ),
            ),
            ApiRoute(
                "/users/me/accounts",
                guarded(self.link_account, bearer=True),
                method="POST",
                operation=Operation(
                    "Link another provider's account (its id_token)",
                    {200: UserPublic},
                    errors=(*_SIGNED_IN, 409, 413),
                    security=BEARER,
                    body=(LinkBody,),
                ),
            ),
            ApiRoute(
                "/users/me/accounts/{provider}/{provider_account_id:path}",
                guarded(self.unlink_account, bearer=True),
                method="DELETE",
                operation=Operation(
                    "Unlink an account (never the last one)",
                    {204: None},
                    errors=(*_SIGNED_IN, 404, 409),
                    security=BEARER,
                ),
            ),
            ApiRoute(
                "/auth/verify-email/request",
                guarded(self.request_verification, bearer=True),
                method="POST",
                operation=Operation(
                    "Mail a verification link",
                    {202: obj("status", status=STRING)},
                    errors=(*LIMITED_ERRORS, 409),
                    security=BEARER,
                ),
            ),
            ApiRoute(
                "/auth/verify-email",
                guarded(self.verify_email),
                method="POST",
                operation=Operation(
                    "Redeem a verification token (JSON, or the confirm page's form)",
                    {200: UserPublic},
                    errors=(400, 403, 409, 413, 429, 503),
                    body=(VerifyEmailBody,),
                    accepts=(inputs.JSON, inputs.FORM),
                    pages=(200, 400, 403, 409),
                    notes={200: "Verified"},
                ),
            ),
            ApiRoute(
                "/auth/verify-email",
                guarded(self.verify_email_page),
                method="GET",
                operation=Operation(
                    "The confirm page the mailed link opens (a button that POSTs)",
                    {200: None},
                    errors=(429, 503),
                    query=(Query("email", required=True), Query("token", required=True)),
                    pages=(200, 400),
                    notes={200: "Confirm page", 400: "Bad link"},
                ),
            ),
        ]

    async def _me(self, request: Request, attempt: Attempt) -> UserPublic:
        return (await self._profile(request, attempt))[0]

    async def _profile(self, request: Request, attempt: Attempt) -> tuple[UserPublic, str]:
        """The signed-in user, and the scope their token was granted."""
        claims = self._bearer.caller(request, attempt)
        # One statement: the session is alive (the sid check) and the user with their accounts.
        found = await self._sessions.profile(claims.session_id, claims.subject)
        if found is None:  # session ended or user deleted: the token no longer speaks for anyone
            raise InvalidToken("the access token is no longer valid", reason="session_ended")
        user, accounts = found
        scope = claims.raw.get("scope")
        return user.public(accounts), scope if isinstance(scope, str) else ""

    async def get_me(self, request: Request, attempt: Attempt) -> Response:
        return json_response(await self._me(request, attempt))

    async def userinfo(self, request: Request, attempt: Attempt) -> Response:
        user, scope = await self._profile(request, attempt)
        info = UserInfo(
            sub=user.id,
            name=user.name,
            email=user.email,
            email_verified=user.email_verified is not None,
            picture=user.image,
        )
        # Only the claims the token's scope grants (docs/api.md); the rest are absent.
        body = info.model_dump_json(exclude=set(withheld(scope)))
        return Response(body, media_type=inputs.JSON, headers=NO_STORE)

    async def patch_me(self, request: Request, attempt: Attempt) -> Response:
        claims = await self._bearer.authenticate(request, attempt)
        changes = inputs.parse(UserUpdate, await inputs.json_object(request))
        user = await self._users.update(
            claims.subject, changes.change(), context=context(request, claims.client_id)
        )
        return json_response(user)

    async def delete_me(self, request: Request, attempt: Attempt) -> Response:
        claims = await self._bearer.authenticate(request, attempt)
        await self._users.delete(
            claims.subject, context=context(request, claims.client_id), by="self"
        )
        return Response(status_code=204)

    async def list_sessions(self, request: Request, attempt: Attempt) -> Response:
        claims = await self._bearer.authenticate(request, attempt)
        sessions = await self._sessions.live(claims.subject, claims.session_id)
        return json_response(SessionList(sessions=sessions))

    async def end_session(self, request: Request, attempt: Attempt) -> Response:
        claims = await self._bearer.authenticate(request, attempt)
        # Another user's session id gets the same 404 as an unknown one.
        ended = await self._sessions.end(
            claims.subject,
            request.path_params["session_id"],
            context=context(request, claims.client_id),
            event="session_revoked",
            reason="self",
        )
        if not ended:
            raise NotFound("no such session")
        return Response(status_code=204)

    async def link_account(self, request: Request, attempt: Attempt) -> Response:
        claims = await self._bearer.authenticate(request, attempt)
        body = inputs.parse(LinkBody, await inputs.json_object(request))
        ctx = context(request, claims.client_id)
        try:
            identity = await self._verifier.verify(body.id_token, nonce=body.nonce)
            user = await self._users.link(claims.subject, identity, context=ctx)
        except IdentityError as error:
            # The client got one generic message for any bad id_token; the rule is logged here.
            logs.auth_event(
                event="link",
                outcome="failure",
                reason=error.reason,
                user_id=claims.subject,
                client=claims.client_id,
                request_id=ctx.request_id,
                token_fingerprint=jws.fingerprint(body.id_token),
            )
            raise
        return json_response(user)

    async def unlink_account(self, request: Request, attempt: Attempt) -> Response:
        claims = await self._bearer.authenticate(request, attempt)
        await self._users.unlink(
            claims.subject,
            request.path_params["provider"],
            request.path_params["provider_account_id"],
            context=context(request, claims.client_id),
        )
        return Response(status_code=204)

    async def request_verification(self, request: Request, attempt: Attempt) -> Response:
        claims = await self._bearer.authenticate(request, attempt)
        await self._verification.request(claims.subject, context=context(request, claims.client_id))
        return JSONResponse({"status": "sent"}, status_code=202, headers=NO_STORE)

    async def verify_email(self, request: Request, attempt: Attempt) -> Response:
        """JSON in, JSON out; the confirm page's form in, a small HTML page out."""
        if inputs.media_type(request) == inputs.FORM:
            link = inputs.parse(VerifyEmailBody, await inputs.form(request))
            try:
                user = await self._verification.redeem(
                    link.email, link.token, context=context(request)
                )
            except (InvalidVerificationToken, Conflict, MailDisabled) as error:
                page = pages.result(False, conflict=isinstance(error, Conflict))
                return HTMLResponse(page, status_code=error.status, headers=pages.HEADERS)
            return HTMLResponse(pages.result(True, user.email), headers=pages.HEADERS)
        link = inputs.parse(VerifyEmailBody, await inputs.json_object(request))
        user = await self._verification.redeem(link.email, link.token, context=context(request))
        return json_response(await self._users.get(user.id))

    async def verify_email_page(self, request: Request, attempt: Attempt) -> Response:
        email = request.query_params.get("email", "")
        token = request.query_params.get("token", "")
        if not email or not token or len(email) > 320 or len(token) > MAX_TOKEN_LENGTH:
            return HTMLResponse(pages.result(False), status_code=400, headers=pages.HEADERS)
        return HTMLResponse(pages.confirm(email, token), headers=pages.HEADERS)
