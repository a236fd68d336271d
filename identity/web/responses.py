"""The answers only the HTTP layer builds: the error body, /userinfo, and the list wrappers.

The shapes the services hand back (`UserPublic`, `TokenResponse`, `Introspection`, …) live with
the tables in `identity.store.models`; these wrap or reshape them for one endpoint each.
"""

from __future__ import annotations

from sqlmodel import SQLModel

from identity.store.shapes import AuditEventPublic, SessionPublic


class ErrorBody(SQLModel):
    """Every error (RFC 6749 §5.2): a code, and a description written for the client."""

    error: str
    error_description: str


class UserInfo(SQLModel):
    """GET /userinfo: the OpenID Connect form; a member the token's scope does not grant is
    absent (`email` → email, email_verified; `profile` → name, picture)."""

    sub: str
    name: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    picture: str | None = None


class SessionList(SQLModel):
    sessions: list[SessionPublic]


class AuditEventList(SQLModel):
    events: list[AuditEventPublic]
    next_cursor: str | None


class SetErrorBody(SQLModel):
    """POST /signals/google's refusal (RFC 8935 §2.3): a code of its §2.4, and a description."""

    err: str
    description: str
