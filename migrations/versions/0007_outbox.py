"""The outbox: notices of changes for others (back-channel logout, webhooks), their delivery
attempts, and the revocation feed's ended sessions (docs/notifications.md).

- outbox: one notice per event and destination, written in the transaction of its change;
  the delivery worker claims due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL).
- deliveries: each attempt (when, outcome, the receiver's status code).
- revocations: every ended session whose access tokens may still be unexpired, with the id of
  the transaction that wrote it (PostgreSQL), which orders the feed.
- identity_sign_in and identity_refresh from migrations/sql/0007/: the sign-in writes the
  user.created / account.linked notices it is given destinations for (none: no row), the
  refresh's reuse detection ends the session as every path does (a revocation row and the
  session.ended notices). Each gains parameters with defaults (the previous release's calls stay
  valid during a rolling upgrade); the old signatures are dropped first, here and on downgrade.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SQL = Path(__file__).resolve().parent.parent / "sql"
FROZEN = SQL / revision
PREVIOUS = SQL / "0006"
# Each function's parameter types, as installed by 0006 and by this revision.
SIGN_IN_0006 = (
    "text, timestamptz, text, text, text, boolean, text, text, text, text, text, text, "
    "timestamptz, text, timestamptz, text, text, text, integer, bigint, integer, bigint, "
    "timestamptz, text, text, text, bigint, text, text, text, text, text, text, text, text, text"
)
SIGN_IN_0007 = f"{SIGN_IN_0006}, text[]"
REFRESH_0006 = (
    "text, text, text[], text, bytea, integer, timestamptz, timestamptz, text, integer, bigint, "
    "integer, bigint, timestamptz, text, text, text, text"
)
REFRESH_0007 = f"{REFRESH_0006}, text[], integer"


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("destination", sa.String(600), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("audit_event_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
    )
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_audit_event_id", "outbox", ["audit_event_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
        sa.Column(
            "outbox_id",
            SERIAL,
            sa.ForeignKey("outbox.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempted_at", TIME, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(200), nullable=True),
    )
    op.create_index("ix_deliveries_outbox_id", "deliveries", ["outbox_id"])
    op.create_table(
        "revocations",
        sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("txid", sa.BigInteger(), nullable=False),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("ended_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
    )
    op.create_index("ix_revocations_order", "revocations", ["txid", "id"])
    op.create_index("ix_revocations_expires_at", "revocations", ["expires_at"])
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS identity_sign_in({SIGN_IN_0006})")
    op.execute(f"DROP FUNCTION IF EXISTS identity_refresh({REFRESH_0006})")
    op.execute((FROZEN / "identity_sign_in.sql").read_text(encoding="utf-8"))
    op.execute((FROZEN / "identity_refresh.sql").read_text(encoding="utf-8"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS identity_sign_in({SIGN_IN_0007})")
        op.execute(f"DROP FUNCTION IF EXISTS identity_refresh({REFRESH_0007})")
        op.execute((PREVIOUS / "identity_sign_in.sql").read_text(encoding="utf-8"))
        op.execute((PREVIOUS / "identity_refresh.sql").read_text(encoding="utf-8"))
    op.drop_table("revocations")
    op.drop_table("deliveries")
    op.drop_table("outbox")
