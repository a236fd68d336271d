"""The data model: the tables (docs/architecture.md).

Tables follow the Auth.js adapter schema (`users`, `accounts`, `sessions`,
`verification_tokens`) plus what token exchange needs; Alembic migrations create them and a
test holds models and migrations together. The public shape of each resource (`UserPublic`,
`SessionPublic`, `TokenResponse`, …) lives beside it in `shapes.py`. Typed handles of the tables
(`USERS`, …) are declared once at the bottom for SQLAlchemy Core statements.

Times are stored timezone-aware and always come back in UTC, on SQLite as on PostgreSQL.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

DEFAULT_SCOPE = "openid email profile"
VERIFIED_BY_MAIL = "mail"  # users.email_verified_by of an address proven by our own link


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


def new_id() -> str:
    # 128 bits from the OS generator: opaque and unguessable, never a counter. Never with a
    # leading "-", which command lines read as an option (one draw in 64 is drawn again).
    while True:
        value = secrets.token_urlsafe(16)
        if not value.startswith("-"):
            return value


def _time(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def _user_fk(*, nullable: bool = False) -> Any:
    return Field(
        sa_column=sa.Column(
            sa.String(32),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=nullable,
            index=True,
        )
    )


# -- tables ------------------------------------------------------------------------------------


class UserBase(SQLModel):
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    image: str | None = Field(default=None, max_length=2048)


class User(UserBase, table=True):
    __tablename__ = "users"
    __table_args__ = (sa.Index("ix_users_created", "created_at", "id"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    email: str | None = Field(default=None, max_length=320, unique=True)
    email_verified: datetime | None = _time(nullable=True)
    # Who proved `email`: a provider's name, or "mail" (our own link); None with a verified
    # address means "before 0006, unknown", which, like "mail", never earns linking by address
    # (docs/accounts.md).
    email_verified_by: str | None = Field(default=None, max_length=32)
    # An address asked for through PATCH /users/me; it becomes `email` when its link is redeemed.
    pending_email: str | None = Field(default=None, max_length=320)
    # Fields the user set through PATCH /users/me: their own edits win over later sign-ins.
    name_edited: bool = Field(default=False)
    image_edited: bool = Field(default=False)
    email_edited: bool = Field(default=False)
    disabled_at: datetime | None = _time(nullable=True)
    last_sign_in_at: datetime | None = _time(nullable=True)
    created_at: datetime = _time()
    updated_at: datetime = _time()


class Account(SQLModel, table=True):
    __tablename__ = "accounts"
    __table_args__ = (
        sa.UniqueConstraint("provider", "provider_account_id", name="uq_accounts_provider"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    user_id: str = _user_fk()
    type: str = Field(default="oidc", max_length=32)
    provider: str = Field(max_length=32)
    provider_account_id: str = Field(max_length=255)
    # Provider tokens are stored only encrypted, or not at all.
    access_token: str | None = Field(default=None, sa_type=sa.Text)
    refresh_token: str | None = Field(default=None, sa_type=sa.Text)
    expires_at: int | None = Field(default=None, sa_type=sa.BigInteger)
    token_type: str | None = Field(default=None, max_length=64)
    scope: str | None = Field(default=None, sa_type=sa.Text)
    id_token: str | None = Field(default=None, sa_type=sa.Text)
    session_state: str | None = Field(default=None, sa_type=sa.Text)
    # Set when the provider says the account is disabled: its sign-ins are refused (403).
    suspended_at: datetime | None = _time(nullable=True)
    # The `iat` of the last suspend/enable event applied: an older one is ignored (cutoffs.py).
    suspension_event_at: datetime | None = _time(nullable=True)
    # When a signal last ended its sessions: an id_token issued no later is refused (cutoffs.py).
    sessions_revoked_at: datetime | None = _time(nullable=True)
    created_at: datetime = _time()
    updated_at: datetime = _time()


class Session(SQLModel, table=True):
    """One sign-in. `session_token` is the SHA-256 of the current refresh token, never it."""

    __tablename__ = "sessions"
    __table_args__ = (
        # The janitor's batches: expired by the absolute end or by idle time (docs/operations.md,
        # "Pruning"); and the sealed successors it forgets, few at any moment, found without
        # reading every session (a partial index: only the rows that hold one).
        sa.Index("ix_sessions_expires", "expires"),
        sa.Index("ix_sessions_last_used_at", "last_used_at"),
        sa.Index(
            "ix_sessions_sealed",
            "rotated_at",
            postgresql_where=sa.text("previous_sealed IS NOT NULL"),
            sqlite_where=sa.text("previous_sealed IS NOT NULL"),
        ),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    session_token: str = Field(max_length=64, unique=True)
    user_id: str = _user_fk()
    expires: datetime = _time()  # absolute end (IDENTITY_REFRESH_TOKEN_TTL)
    client_id: str = Field(max_length=128)
    scope: str = Field(default=DEFAULT_SCOPE, max_length=256)
    # The audience the exchange granted (None: the configured default); every refresh mints
    # with it, never wider.
    audience: str | None = Field(default=None, sa_type=sa.Text)
    # The provider account whose sign-in started the session, and the provider's session id
    # (the id_token's `sid`), for the provider's signals to end exactly these sessions.
    account_id: str | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.String(32),
            sa.ForeignKey("accounts.id", ondelete="SET NULL"),
            nullable=True,
            index=True,
        ),
    )
    upstream_sid: str | None = Field(default=None, max_length=255, index=True)
    user_agent: str | None = Field(default=None, max_length=512)
    created_at: datetime = _time()
    last_used_at: datetime = _time()
    # The reuse interval: the parent of the current token, and the current token sealed under a
    # key derived from that parent (refresh_tokens.seal); cleared when the interval ends.
    previous_hash: str | None = Field(default=None, max_length=64, index=True)
    previous_sealed: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    rotated_at: datetime | None = _time(nullable=True)


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

    identifier: str = Field(primary_key=True, max_length=320)  # the address being proven
    token: str = Field(primary_key=True, max_length=64)  # SHA-256 of the mailed token
    expires: datetime = _time()
    user_id: str = _user_fk()  # who asked: the address moves to this user only


class UsedIdToken(SQLModel, table=True):
    """Replay keys of exchanged id_tokens, kept while the token could still be accepted."""

    __tablename__ = "used_id_tokens"

    replay_key: str = Field(primary_key=True, max_length=64)
    expires_at: datetime = _time(index=True)


class ReceivedSignal(SQLModel, table=True):
    """The `jti` of each security event received from a provider (docs/signals.md), kept while
    the event could still be accepted: a second delivery is acknowledged and changes nothing."""

    __tablename__ = "received_signals"

    provider: str = Field(primary_key=True, max_length=32)
    jti: str = Field(primary_key=True, max_length=255)
    expires_at: datetime = _time(index=True)


class EndedUpstreamSession(SQLModel, table=True):
    """A provider `sid` a back-channel logout ended: id_tokens carrying it are refused."""

    __tablename__ = "ended_upstream_sessions"

    provider: str = Field(primary_key=True, max_length=32)
    sid: str = Field(primary_key=True, max_length=255)
    expires_at: datetime = _time(index=True)


class UndeliverableAddress(SQLModel, table=True):
    """An address its provider said takes no mail (Apple's relay, forwarding off): none sent."""

    __tablename__ = "undeliverable_addresses"

    address: str = Field(primary_key=True, max_length=320)
    provider: str = Field(max_length=32)
    since: datetime = _time()


class RateLimitWindow(SQLModel, table=True):
    """One fixed window of a rate limit: how many events `key` had since `window_start`."""

    __tablename__ = "rate_limits"

    key: str = Field(primary_key=True, max_length=200)
    window_start: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    count: int = Field(default=0)
    expires_at: datetime = _time(index=True)


class AuditEvent(SQLModel, table=True):
    """What happened to whom (docs/admin.md). `user_id` is kept when the user is deleted."""

    __tablename__ = "audit_events"
    __table_args__ = (
        sa.Index("ix_audit_user", "user_id", "id"),
        sa.Index("ix_audit_type", "type", "id"),
    )

    id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )
    created_at: datetime = _time(index=True)
    type: str = Field(max_length=40)
    user_id: str | None = Field(default=None, max_length=32)
    session_id: str | None = Field(default=None, max_length=32)
    client_id: str | None = Field(default=None, max_length=128)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)
    request_id: str | None = Field(default=None, max_length=128)
    detail: dict[str, Any] = Field(
        default_factory=dict, sa_type=sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    )


def _serial() -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )


_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


_AUTOINCREMENT = {"sqlite_autoincrement": True}


class OutboxNotice(SQLModel, table=True):
    """One notice for one destination, written in the transaction of its change and delivered
    by the worker (docs/notifications.md). `payload` holds ids and changed field names, never a
    token or secret; `sealed`, only an Apple revocation's, its refresh token as sealed in
    `accounts` (Fernet), cleared when the notice is delivered or dropped."""

    __tablename__ = "outbox"
    # AUTOINCREMENT: no id handed out twice on SQLite (receivers deduplicate by msg_<id>).
    __table_args__ = (sa.Index("ix_outbox_due", "state", "next_attempt_at"), _AUTOINCREMENT)

    id: int | None = _serial()
    event: str = Field(max_length=32)  # user.created, session.ended, …
    # webhook:<url>, backchannel:<client id> or apple:<client id>
    destination: str = Field(max_length=600)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=_JSON)
    audit_event_id: int | None = Field(default=None, sa_type=sa.BigInteger, index=True)
    created_at: datetime = _time()
    next_attempt_at: datetime = _time()
    attempts: int = Field(default=0)
    state: str = Field(default="pending", max_length=16)  # pending, delivered, dropped
    finished_at: datetime | None = _time(nullable=True)
    sealed: str | None = Field(default=None, sa_type=sa.Text)


class DeliveryAttempt(SQLModel, table=True):
    """One attempt to deliver a notice: when, how it went, the receiver's status code."""

    __tablename__ = "deliveries"

    id: int | None = _serial()
    outbox_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("outbox.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    attempted_at: datetime = _time()
    outcome: str = Field(max_length=16)  # delivered, failed, refused, dropped
    status_code: int | None = Field(default=None)
    error: str | None = Field(default=None, max_length=200)  # a class of error, never a body


class Revocation(SQLModel, table=True):
    """An ended session whose access tokens may still be unexpired: the revocation feed, served
    by id, ids taken in commit order (docs/notifications.md); `txid` is kept for old cursors."""

    __tablename__ = "revocations"
    # No id handed out twice on SQLite (a cursor past it would skip the new row); on
    # PostgreSQL a trigger takes ids in commit order (migration 0013).
    __table_args__ = (sa.Index("ix_revocations_order", "txid", "id"), _AUTOINCREMENT)

    id: int | None = _serial()
    txid: int = Field(default=0, sa_type=sa.BigInteger)
    session_id: str = Field(max_length=32)
    client_id: str = Field(max_length=128)
    user_id: str = Field(max_length=32)
    ended_at: datetime = _time()
    expires_at: datetime = _time(index=True)  # the latest expiry of its access tokens


class SigningKeyRow(SQLModel, table=True):
    """A signing key of the database key store (docs/operations.md, "Keys"): the private key
    sealed under IDENTITY_KEY_ENCRYPTION_KEY (a Fernet token of its PKCS #8 DER), the public
    JWK in the clear. Its state follows from the times and the publish lead, as in a key
    directory; nothing else is stored."""

    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True, max_length=64)  # RFC 7638 thumbprint
    created_at: datetime = _time()
    activates_at: datetime = _time()
    sealed_key: str = Field(sa_type=sa.Text)
    public_jwk: dict[str, Any] = Field(sa_type=sa.JSON)


# -- typed table handles, declared once --------------------------------------------------------

_tables = SQLModel.metadata.tables
USERS: sa.Table = _tables["users"]
ACCOUNTS: sa.Table = _tables["accounts"]
SESSIONS: sa.Table = _tables["sessions"]
ROTATED: sa.Table = _tables["rotated_refresh_tokens"]
VERIFICATION_TOKENS: sa.Table = _tables["verification_tokens"]
USED_ID_TOKENS: sa.Table = _tables["used_id_tokens"]
RATE_LIMITS: sa.Table = _tables["rate_limits"]
AUDIT_EVENTS: sa.Table = _tables["audit_events"]
OUTBOX: sa.Table = _tables["outbox"]
DELIVERIES: sa.Table = _tables["deliveries"]
REVOCATIONS: sa.Table = _tables["revocations"]
SIGNING_KEYS: sa.Table = _tables["signing_keys"]
RECEIVED_SIGNALS: sa.Table = _tables["received_signals"]
UNDELIVERABLE: sa.Table = _tables["undeliverable_addresses"]
ENDED_UPSTREAM: sa.Table = _tables["ended_upstream_sessions"]
