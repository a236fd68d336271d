"""The signed-in user's endpoints: /users/me (and its sessions and accounts), /userinfo, and
email verification (docs/api.md)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from identity import logs
from identity.accounts.email_verification import EmailVerification
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
from identity.store.models import SessionList, UserInfo, UserPublic, UserUpdate
from identity.tokens import jws
from identity.tokens.id_tokens import IdTokenVerifier

from . import inputs, pages
from .bearer import Bearer
from .rendering import NO_STORE, context, json_response


class UserEndpoints:
    def __init__(
        self,
        *,
        bearer: Bearer,
        sessions: Sessions,
        users: Users,
        verification: EmailVerification,
        verifier: IdTokenVerifier,
    ) -> None:
        self._bearer = bearer
        self._sessions = sessions
        self._users = users
        self._verification = verification
        self._verifier = verifier

    def routes(self) -> list[Route]:
        return [
            Route("/users/me", self.get_me, methods=["GET"]),
            Route("/users/me", self.patch_me, methods=["PATCH"]),
            Route("/users/me", self.delete_me, methods=["DELETE"]),
            Route("/userinfo", self.userinfo, methods=["GET"]),
            Route("/users/me/sessions", self.list_sessions, methods=["GET"]),
            Route("/users/me/sessions/{session_id}", self.end_session, methods=["DELETE"]),
            Route("/users/me/accounts", self.link_account, methods=["POST"]),
            Route(
                "/users/me/accounts/{provider}/{provider_account_id:path}",
                self.unlink_account,
                methods=["DELETE"],
            ),
            Route("/auth/verify-email/request", self.request_verification, methods=["POST"]),
            Route("/auth/verify-email", self.verify_email, methods=["POST"]),
            Route("/auth/verify-email", self.verify_email_page, methods=["GET"]),
        ]

    async def _me(self, request: Request) -> UserPublic:
        claims = self._bearer.verify(inputs.bearer(request))
        # One statement: the session is alive (the sid check) and the user with their accounts.
        found = await self._sessions.profile(claims.session_id, claims.subject)
        if found is None:  # session ended or user deleted: the token no longer speaks for anyone
            raise InvalidToken("the access token is no longer valid", reason="session_ended")
        user, accounts = found
        return user.public(accounts)

    async def get_me(self, request: Request) -> Response:
        return json_response(await self._me(request))

    async def userinfo(self, request: Request) -> Response:
        user = await self._me(request)
        info = UserInfo(
            sub=user.id,
            name=user.name,
            email=user.email,
            email_verified=user.email_verified is not None,
            picture=user.image,
        )
        return json_response(info)

    async def patch_me(self, request: Request) -> Response:
        claims = await self._bearer.authenticate(request)
        changes = UserUpdate.parse(await inputs.json_object(request))
        user = await self._users.update(
            claims.subject, changes, context=context(request, claims.client_id)
        )
        return json_response(user)

    async def delete_me(self, request: Request) -> Response:
        claims = await self._bearer.authenticate(request)
        await self._users.delete(
            claims.subject, context=context(request, claims.client_id), by="self"
        )
        return Response(status_code=204)

    async def list_sessions(self, request: Request) -> Response:
        claims = await self._bearer.authenticate(request)
        sessions = await self._sessions.live(claims.subject, claims.session_id)
        return json_response(SessionList(sessions=sessions))

    async def end_session(self, request: Request) -> Response:
        claims = await self._bearer.authenticate(request)
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

    async def link_account(self, request: Request) -> Response:
        claims = await self._bearer.authenticate(request)
        body = await inputs.json_object(request)
        token = inputs.required(body, "id_token", limit=65_536)
        ctx = context(request, claims.client_id)
        try:
            identity = await self._verifier.verify(token, nonce=inputs.nonce(body))
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
                token_fingerprint=jws.fingerprint(token),
            )
            raise
        return json_response(user)

    async def unlink_account(self, request: Request) -> Response:
        claims = await self._bearer.authenticate(request)
        await self._users.unlink(
            claims.subject,
            request.path_params["provider"],
            request.path_params["provider_account_id"],
            context=context(request, claims.client_id),
        )
        return Response(status_code=204)

    async def request_verification(self, request: Request) -> Response:
        claims = await self._bearer.authenticate(request)
        await self._verification.request(claims.subject)
        return JSONResponse({"status": "sent"}, status_code=202, headers=NO_STORE)

    async def verify_email(self, request: Request) -> Response:
        """JSON in, JSON out; the confirm page's form in, a small HTML page out."""
        if inputs.media_type(request) == inputs.FORM:
            form = await inputs.form(request)
            try:
                user = await self._verification.redeem(
                    form.get("email"), form.get("token"), context=context(request)
                )
            except (InvalidVerificationToken, Conflict, MailDisabled) as error:
                page = pages.result(False, conflict=isinstance(error, Conflict))
                return HTMLResponse(page, status_code=error.status, headers=pages.HEADERS)
            return HTMLResponse(pages.result(True, user.email), headers=pages.HEADERS)
        body = await inputs.json_object(request)
        user = await self._verification.redeem(
            body.get("email"), body.get("token"), context=context(request)
        )
        return json_response(await self._users.get(user.id))

    async def verify_email_page(self, request: Request) -> Response:
        email = request.query_params.get("email", "")
        token = request.query_params.get("token", "")
        if not email or not token or len(email) > 320 or len(token) > 512:
            return HTMLResponse(pages.result(False), status_code=400, headers=pages.HEADERS)
        return HTMLResponse(pages.confirm(email, token), headers=pages.HEADERS)
