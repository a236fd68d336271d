"""The admin API (docs/admin.md): HTTP Basic as a client named in IDENTITY_ADMIN_CLIENTS.

Every route sits in one mount, `/admin`, and reaches its handler only through the mount's guard,
which authenticates the admin client and hands the handler its id: no handler authenticates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Router

from identity.accounts import listing
from identity.accounts.admin import Admin
from identity.accounts.audit import AuditLog
from identity.accounts.limits import Attempt
from identity.accounts.notices import NoticeLog
from identity.errors import NotFound
from identity.store.shapes import AdminUser, AdminUserList, AuditEventDetail

from . import inputs
from .clients import ClientAuthenticator
from .failure_limit import FailureLimit
from .rendering import context, json_response
from .requests import AdminUserUpdate
from .responses import AuditEventList
from .routes import ADMIN, ApiRoute, Operation, Query

AdminHandler = Callable[[Request, str], Awaitable[Response]]
_ADMIN_ERRORS = (400, 401, 403, 429, 503)
_PAGE = (
    Query("limit", {"type": "integer", "minimum": 1, "maximum": listing.MAX_LIMIT}),
    Query("cursor"),
)


class AdminEndpoints:
    def __init__(
        self,
        *,
        admin: Admin,
        audit_log: AuditLog,
        clients: ClientAuthenticator,
        limit: FailureLimit,
        notice_log: NoticeLog,
    ) -> None:
        self._notices = notice_log
        self._admin = admin
        self._audit = audit_log
        self._clients = clients
        self._limit = limit

    def routes(self) -> list[BaseRoute]:
        """One mount. Its handlers take the admin's id, so none can be routed without the
        guard that authenticates it (`_guarded`)."""
        admin = self._guarded
        user = "/users/{id}"
        return [
            Mount(
                "/admin",
                app=Router(
                    redirect_slashes=False,  # /admin/users/ is a 404, never a redirect
                    routes=[
                        ApiRoute(
                            "/users",
                            admin(self.list_users),
                            method="GET",
                            operation=Operation(
                                "Users, newest first",
                                {200: AdminUserList},
                                errors=_ADMIN_ERRORS,
                                security=ADMIN,
                                query=(
                                    Query("email"),
                                    Query("provider"),
                                    Query("provider_account_id"),
                                    *_PAGE,
                                ),
                            ),
                        ),
                        ApiRoute(
                            user,
                            admin(self.get_user),
                            method="GET",
                            operation=Operation(
                                "A user, with accounts and live sessions",
                                {200: AdminUser},
                                errors=(*_ADMIN_ERRORS, 404),
                                security=ADMIN,
                            ),
                        ),
                        ApiRoute(
                            user,
                            admin(self.patch_user),
                            method="PATCH",
                            operation=Operation(
                                "Disable or enable a user",
                                {200: AdminUser},
                                errors=(*_ADMIN_ERRORS, 404, 413),
                                security=ADMIN,
                                body=(AdminUserUpdate,),
                            ),
                        ),
                        ApiRoute(
                            user,
                            admin(self.delete_user),
                            method="DELETE",
                            operation=Operation(
                                "Delete a user",
                                {204: None},
                                errors=(*_ADMIN_ERRORS, 404),
                                security=ADMIN,
                            ),
                        ),
                        ApiRoute(
                            f"{user}/sessions",
                            admin(self.delete_sessions),
                            method="DELETE",
                            operation=Operation(
                                "End every session of a user",
                                {204: None},
                                errors=(*_ADMIN_ERRORS, 404),
                                security=ADMIN,
                            ),
                        ),
                        ApiRoute(
                            "/events",
                            admin(self.list_events),
                            method="GET",
                            operation=Operation(
                                "The audit log, newest first",
                                {200: AuditEventList},
                                errors=_ADMIN_ERRORS,
                                security=ADMIN,
                                query=(
                                    Query("user_id"),
                                    Query("type"),
                                    Query("since", {"type": "string", "format": "date-time"}),
                                    *_PAGE,
                                ),
                            ),
                        ),
                        ApiRoute(
                            "/events/{id}",
                            admin(self.get_event),
                            method="GET",
                            operation=Operation(
                                "One audit event with its notices' delivery attempts",
                                {200: AuditEventDetail},
                                errors=(*_ADMIN_ERRORS, 404),
                                security=ADMIN,
                            ),
                        ),
                    ],
                ),
            )
        ]

    def _guarded(self, handler: AdminHandler) -> Callable[[Request], Awaitable[Response]]:
        """The mount's guard: 401 without valid Basic credentials, 403 for a client that is not
        an admin (or with the admin API off); the handler gets the admin client's id. Behind
        the failure limit: failed authentications count per IP, and past the limit every
        request from that IP is 429 before its credentials are looked at."""

        async def endpoint(request: Request, attempt: Attempt) -> Response:
            admin = self._clients.admin(request.headers)
            attempt.admin_authenticated(admin)
            return await handler(request, admin)

        return self._limit.guarded(endpoint)

    async def list_users(self, request: Request, admin: str) -> Response:
        q = request.query_params
        result = await self._admin.search(
            email=q.get("email") or None,
            provider=q.get("provider") or None,
            provider_account_id=q.get("provider_account_id") or None,
            limit=listing.limit(q.get("limit")),
            cursor=q.get("cursor") or None,
        )
        return json_response(result)

    async def get_user(self, request: Request, admin: str) -> Response:
        return json_response(await self._admin.detail(request.path_params["id"]))

    async def patch_user(self, request: Request, admin: str) -> Response:
        change = inputs.parse(AdminUserUpdate, await inputs.json_object(request))
        user = await self._admin.set_disabled(
            request.path_params["id"], change.disabled, context=context(request, admin), by="admin"
        )
        return json_response(user)

    async def delete_sessions(self, request: Request, admin: str) -> Response:
        await self._admin.revoke_sessions(
            request.path_params["id"], context=context(request, admin), by="admin"
        )
        return Response(status_code=204)

    async def delete_user(self, request: Request, admin: str) -> Response:
        await self._admin.delete(
            request.path_params["id"], context=context(request, admin), by="admin"
        )
        return Response(status_code=204)

    async def list_events(self, request: Request, admin: str) -> Response:
        q = request.query_params
        events, cursor = await self._audit.query(
            user_id=q.get("user_id") or None,
            type_=q.get("type") or None,
            since=listing.since(q.get("since")),
            limit=listing.limit(q.get("limit")),
            cursor=q.get("cursor") or None,
        )
        return json_response(AuditEventList(events=events, next_cursor=cursor))

    async def get_event(self, request: Request, admin: str) -> Response:
        raw = request.path_params["id"]
        # Not an event id at all: the same 404 as an unknown one.
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise NotFound("no such event")
        return json_response(await self._notices.event(int(raw)))
