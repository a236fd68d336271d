"""Version 2: pending and disabled users, the reuse interval, owned mail tokens, the audit log.

- users: pending_email, disabled_at, last_sign_in_at; an index for newest-first listing.
- sessions: previous_hash, previous_sealed, rotated_at (the refresh reuse interval).
- verification_tokens: user_id, so a mailed address moves only to the user who asked for it.
  Outstanding tokens (24 h at most) cannot be attributed and are deleted.
- used_id_tokens: the key is now the replay key over what was signed (`token_hash` held the hash
  of the raw text). Old rows are kept under the new name until they expire.
- audit_events: the audit log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("pending_email", sa.String(320), nullable=True))
        batch.add_column(sa.Column("disabled_at", TIME, nullable=True))
        batch.add_column(sa.Column("last_sign_in_at", TIME, nullable=True))
        batch.create_index("ix_users_created", ["created_at", "id"])

    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("previous_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("previous_sealed", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("rotated_at", TIME, nullable=True))
        batch.create_index("ix_sessions_previous_hash", ["previous_hash"])

    op.execute("DELETE FROM verification_tokens")
    with op.batch_alter_table("verification_tokens") as batch:
        batch.add_column(sa.Column("user_id", sa.String(32), nullable=False))
        batch.create_foreign_key(
            "fk_verification_tokens_user_id_users", "users", ["user_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_verification_tokens_user_id", ["user_id"])

    with op.batch_alter_table("used_id_tokens") as batch:
        batch.alter_column("token_hash", new_column_name="replay_key")

    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("session_id", sa.String(32), nullable=True),
        sa.Column("client_id", sa.String(128), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column(
            "detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
    )
    op.create_index("ix_audit_events_created_at", "audit_events", ["created_at"])
    op.create_index("ix_audit_user", "audit_events", ["user_id", "id"])
    op.create_index("ix_audit_type", "audit_events", ["type", "id"])


def downgrade() -> None:
    op.drop_table("audit_events")
    with op.batch_alter_table("used_id_tokens") as batch:
        batch.alter_column("replay_key", new_column_name="token_hash")
    with op.batch_alter_table("verification_tokens") as batch:
        batch.drop_index("ix_verification_tokens_user_id")
        batch.drop_constraint("fk_verification_tokens_user_id_users", type_="foreignkey")
        batch.drop_column("user_id")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_previous_hash")
        batch.drop_column("rotated_at")
        batch.drop_column("previous_sealed")
        batch.drop_column("previous_hash")
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_created")
        batch.drop_column("last_sign_in_at")
        batch.drop_column("disabled_at")
        batch.drop_column("pending_email")
