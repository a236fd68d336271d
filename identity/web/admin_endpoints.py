"""The admin API (docs/admin.md): HTTP Basic as a client named in IDENTITY_ADMIN_CLIENTS.

Every route sits in one mount, `/admin`, and reaches its handler only through the mount's guard,
which authenticates the admin client and hands the handler its id: no handler authenticates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount

from identity.accounts.admin import MAX_LIMIT, Admin
from identity.accounts.audit import AuditLog
from identity.accounts.notices import NoticeLog
from identity.errors import InvalidRequest, NotFound
from identity.store.shapes import AdminUser, AdminUserList, AuditEventDetail

from . import inputs
from .clients import ClientAuthenticator
from .rendering import context, json_response
from .requests import AdminUserUpdate
from .responses import AuditEventList
from .routes import ADMIN, ApiRoute, Operation, Query

AdminHandler = Callable[[Request, str], Awaitable[Response]]
_ADMIN_ERRORS = (400, 401, 403, 503)
_PAGE = (
    Query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
    Query("cursor"),
)


class AdminEndpoints:
    def __init__(
        self,
        *,
        admin: Admin,
        audit_log: AuditLog,
        clients: ClientAuthenticator,
        notice_log: NoticeLog,
    ) -> None:
        self._notices = notice_log
        self._admin = admin
        self._audit = audit_log
        self._clients = clients

    def routes(self) -> list[BaseRoute]:
        """One mount. Its handlers take the admin's id, so none can be routed without the
        guard that authenticates it (`_guarded`)."""
        admin = self._guarded
        user = "/users/{id}"
        return [
            Mount(
                "/admin",
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
            )
        ]

    def _guarded(self, handler: AdminHandler) -> Callable[[Request], Awaitable[Response]]:
        """The mount's guard: 401 without valid Basic credentials, 403 for a client that is not
        an admin (or with the admin API off); the handler gets the admin client's id."""

        async def endpoint(request: Request) -> Response:
            return await handler(request, self._clients.admin(request.headers))

        return endpoint

    async def list_users(self, request: Request, admin: str) -> Response:
        q = request.query_params
        result = await self._admin.search(
            email=q.get("email") or None,
            provider=q.get("provider") or None,
            provider_account_id=q.get("provider_account_id") or None,
            limit=_limit(q.get("limit")),
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
            since=_since(q.get("since")),
            limit=_limit(q.get("limit")),
            cursor=q.get("cursor") or None,
        )
        return json_response(AuditEventList(events=events, next_cursor=cursor))

    async def get_event(self, request: Request, admin: str) -> Response:
        raw = request.path_params["id"]
        # Not an event id at all: the same 404 as an unknown one.
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise NotFound("no such event")
        return json_response(await self._notices.event(int(raw)))


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 50
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _since(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest("since: an ISO 8601 time, such as 2026-12-01T00:00:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
