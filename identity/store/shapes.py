"""The public family: the one shape of each resource the services hand back.

It renders output and feeds the OpenAPI document, as in fastapi/full-stack-fastapi-template's
models.py (request bodies, and the answers only HTTP builds, are the web layer's:
`identity.web.requests`, `identity.web.responses`). The tables are in `models.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlmodel import SQLModel

from identity.clock import as_utc
from identity.store.models import UserBase


class AccountPublic(SQLModel):
    provider: str
    provider_account_id: str


class UserPublic(UserBase):
    """GET /users/me; `email_verified` is the time of verification, or null."""

    id: str
    email_verified: datetime | None
    pending_email: str | None
    created_at: datetime
    updated_at: datetime
    accounts: list[AccountPublic]


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user row as the services hand it around (the hot paths build it from SQL rows)."""

    id: str
    name: str | None
    email: str | None
    email_verified: datetime | None
    image: str | None
    pending_email: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> UserRecord:
        verified = row["email_verified"]
        return cls(
            id=row["id"],
            name=row["name"],
            email=row["email"],
            email_verified=as_utc(verified) if verified is not None else None,
            image=row["image"],
            pending_email=row["pending_email"],
            created_at=as_utc(row["created_at"]),
            updated_at=as_utc(row["updated_at"]),
        )

    def public(self, accounts: Sequence[AccountPublic]) -> UserPublic:
        return UserPublic(
            id=self.id,
            name=self.name,
            email=self.email,
            email_verified=self.email_verified,
            image=self.image,
            pending_email=self.pending_email,
            created_at=self.created_at,
            updated_at=self.updated_at,
            accounts=list(accounts),
        )


class SessionPublic(SQLModel):
    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime  # when it dies unless used: absolute or idle end, whichever is first
    user_agent: str | None
    client_id: str
    current: bool = False


class TokenResponse(SQLModel):
    """A successful exchange (with `user`) or refresh (without)."""

    access_token: str
    issued_token_type: str | None = None
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a token type name, not a secret
    expires_in: int
    refresh_token: str
    user: UserPublic | None = None


class Introspection(SQLModel):
    """RFC 7662: only `active` when the token is not active."""

    active: bool
    token_type: str | None = None
    iss: str | None = None
    sub: str | None = None
    aud: str | list[str] | None = None
    exp: int | None = None
    iat: int | None = None
    jti: str | None = None
    sid: str | None = None
    client_id: str | None = None
    scope: str | None = None


class AdminAccount(AccountPublic):
    created_at: datetime


class AdminUser(UserPublic):
    """The admin API's user: GET /users/me's form plus what operators need."""

    accounts: list[AdminAccount]  # type: ignore[assignment]
    disabled_at: datetime | None
    last_sign_in_at: datetime | None
    sessions: list[SessionPublic] | None = None  # in the detail view only


class AdminUserList(SQLModel):
    users: list[AdminUser]
    next_cursor: str | None


class AuditEventPublic(SQLModel):
    id: int
    created_at: datetime
    type: str
    user_id: str | None
    session_id: str | None
    client_id: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    detail: dict[str, Any]


class RevokedSession(SQLModel):
    sid: str  # the `sid` of its access tokens
    exp: int  # when the last of them expires


class RevocationPage(SQLModel):
    """GET /revocations: sessions ended after the cursor whose access tokens may still live."""

    revoked: list[RevokedSession]
    next_cursor: str


class DeliveryPublic(SQLModel):
    attempted_at: datetime
    outcome: str  # delivered, failed, dropped
    status_code: int | None
    error: str | None


class NoticePublic(SQLModel):
    """One outbox notice and its delivery attempts (docs/notifications.md)."""

    id: int
    event: str
    destination: str
    state: str  # pending, delivered, dropped
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None  # None once delivered or dropped
    audit_event_id: int | None
    deliveries: list[DeliveryPublic]


class AuditEventDetail(AuditEventPublic):
    """GET /admin/events/{id}: the event and its notices' delivery attempts."""

    notices: list[NoticePublic]
