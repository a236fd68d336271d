"""Tables (SPEC §6): the Auth.js adapter schema plus what token exchange needs.

Times are stored timezone-aware and always come back in UTC, on SQLite as on PostgreSQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp with time zone that SQLite, which drops the zone, returns in UTC too."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


DEFAULT_SCOPE = "openid email profile"


def new_id() -> str:
    # 128 bits from the OS generator: opaque and unguessable, never a counter.
    return secrets.token_urlsafe(16)


def _time(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320, unique=True)
    email_verified: datetime | None = _time(nullable=True)
    image: str | None = Field(default=None, max_length=2048)
    # Fields the user set through PATCH /users/me: their own edits win over later sign-ins.
    name_edited: bool = Field(default=False)
    image_edited: bool = Field(default=False)
    email_edited: bool = Field(default=False)
    created_at: datetime = _time()
    updated_at: datetime = _time()


class Account(SQLModel, table=True):
    __tablename__ = "accounts"
    __table_args__ = (
        sa.UniqueConstraint("provider", "provider_account_id", name="uq_accounts_provider"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    user_id: str = Field(
        sa_column=sa.Column(
            sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    type: str = Field(default="oidc", max_length=32)
    provider: str = Field(max_length=32)
    provider_account_id: str = Field(max_length=255)
    # Provider tokens are stored only encrypted, or not at all (SPEC §6).
    access_token: str | None = Field(default=None, sa_type=sa.Text)
    refresh_token: str | None = Field(default=None, sa_type=sa.Text)
    expires_at: int | None = Field(default=None, sa_type=sa.BigInteger)
    token_type: str | None = Field(default=None, max_length=64)
    scope: str | None = Field(default=None, sa_type=sa.Text)
    id_token: str | None = Field(default=None, sa_type=sa.Text)
    session_state: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _time()
    updated_at: datetime = _time()


class Session(SQLModel, table=True):
    """One sign-in. `session_token` holds the SHA-256 of the current refresh token, never it."""

    __tablename__ = "sessions"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    session_token: str = Field(max_length=64, unique=True)
    user_id: str = Field(
        sa_column=sa.Column(
            sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    expires: datetime = _time()  # absolute end (IDENTITY_REFRESH_TOKEN_TTL)
    client_id: str = Field(max_length=128)
    scope: str = Field(default=DEFAULT_SCOPE, max_length=256)
    user_agent: str | None = Field(default=None, max_length=512)
    created_at: datetime = _time()
    last_used_at: datetime = _time()


class RotatedRefreshToken(SQLModel, table=True):
    """Hashes of a session's earlier refresh tokens: presenting one is reuse (RFC 9700 4.14.2)."""

    __tablename__ = "rotated_refresh_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    session_id: str = Field(
        sa_column=sa.Column(
            sa.String(32),
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    rotated_at: datetime = _time()


class VerificationToken(SQLModel, table=True):
    __tablename__ = "verification_tokens"

    identifier: str = Field(primary_key=True, max_length=320)
    token: str = Field(primary_key=True, max_length=64)  # SHA-256 of the mailed token
    expires: datetime = _time()


class UsedIdToken(SQLModel, table=True):
    """Hashes of exchanged upstream id_tokens, kept until their `exp` (single use, SPEC §5)."""

    __tablename__ = "used_id_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    expires_at: datetime = _time(index=True)


class RateLimitWindow(SQLModel, table=True):
    """One fixed window of a rate limit: how many events `key` had since `window_start`."""

    __tablename__ = "rate_limits"

    key: str = Field(primary_key=True, max_length=200)
    window_start: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    count: int = Field(default=0)
    expires_at: datetime = _time(index=True)


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as the API renders every time."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def public_user(user: Any, accounts: Sequence[Any]) -> dict[str, Any]:
    """The API form of a user (an ORM object or a row) and their accounts."""
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "email_verified": iso(user.email_verified),
        "image": user.image,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.updated_at),
        "accounts": [
            {"provider": a.provider, "provider_account_id": a.provider_account_id} for a in accounts
        ],
    }
