"""The admin API (docs/admin.md): HTTP Basic as a client named in IDENTITY_ADMIN_CLIENTS."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from identity.accounts.admin import MAX_LIMIT, Admin
from identity.accounts.audit import AuditLog
from identity.errors import InvalidRequest
from identity.store.models import AdminUserUpdate, AuditEventList

from . import inputs
from .clients import ClientAuthenticator
from .rendering import context, json_response


class AdminEndpoints:
    def __init__(self, *, admin: Admin, audit_log: AuditLog, clients: ClientAuthenticator) -> None:
        self._admin = admin
        self._audit = audit_log
        self._clients = clients

    def routes(self) -> list[Route]:
        return [
            Route("/admin/users", self.list_users, methods=["GET"]),
            Route("/admin/users/{id}", self.get_user, methods=["GET"]),
            Route("/admin/users/{id}", self.patch_user, methods=["PATCH"]),
            Route("/admin/users/{id}", self.delete_user, methods=["DELETE"]),
            Route("/admin/users/{id}/sessions", self.delete_sessions, methods=["DELETE"]),
            Route("/admin/events", self.list_events, methods=["GET"]),
        ]

    async def list_users(self, request: Request) -> Response:
        self._clients.admin(request.headers)
        q = request.query_params
        result = await self._admin.search(
            email=q.get("email") or None,
            provider=q.get("provider") or None,
            provider_account_id=q.get("provider_account_id") or None,
            limit=_limit(q.get("limit")),
            cursor=q.get("cursor") or None,
        )
        return json_response(result)

    async def get_user(self, request: Request) -> Response:
        self._clients.admin(request.headers)
        return json_response(await self._admin.detail(request.path_params["id"]))

    async def patch_user(self, request: Request) -> Response:
        admin = self._clients.admin(request.headers)
        change = AdminUserUpdate.parse(await inputs.json_object(request))
        user = await self._admin.set_disabled(
            request.path_params["id"], change.disabled, context=context(request, admin), by="admin"
        )
        return json_response(user)

    async def delete_sessions(self, request: Request) -> Response:
        admin = self._clients.admin(request.headers)
        await self._admin.revoke_sessions(
            request.path_params["id"], context=context(request, admin), by="admin"
        )
        return Response(status_code=204)

    async def delete_user(self, request: Request) -> Response:
        admin = self._clients.admin(request.headers)
        await self._admin.delete(
            request.path_params["id"], context=context(request, admin), by="admin"
        )
        return Response(status_code=204)

    async def list_events(self, request: Request) -> Response:
        self._clients.admin(request.headers)
        q = request.query_params
        events, cursor = await self._audit.query(
            user_id=q.get("user_id") or None,
            type_=q.get("type") or None,
            since=_since(q.get("since")),
            limit=_limit(q.get("limit")),
            cursor=q.get("cursor") or None,
        )
        return json_response(AuditEventList(events=events, next_cursor=cursor))


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
