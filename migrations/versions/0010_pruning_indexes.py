"""Indexes the janitor's batches need at scale (docs/performance.md, "Data at scale").

- sessions.expires and sessions.last_used_at: the pruning of expired sessions (by the absolute
  end or by idle time) reads batches of them through these, instead of every session.
- sessions.rotated_at where previous_sealed IS NOT NULL (partial): the sealed successors whose
  reuse interval ended, forgotten every housekeeping round by every worker; without it each
  round read the whole table.

Indexes only: no data changes, and the downgrade drops them. On a large table, create them
beforehand with CREATE INDEX CONCURRENTLY under the same names (docs/operations.md, "Pruning");
this migration then finds them and skips them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEALED = sa.text("previous_sealed IS NOT NULL")


def upgrade() -> None:
    existing = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("sessions")}
    if "ix_sessions_expires" not in existing:
        op.create_index("ix_sessions_expires", "sessions", ["expires"])
    if "ix_sessions_last_used_at" not in existing:
        op.create_index("ix_sessions_last_used_at", "sessions", ["last_used_at"])
    if "ix_sessions_sealed" not in existing:
        op.create_index(
            "ix_sessions_sealed",
            "sessions",
            ["rotated_at"],
            postgresql_where=SEALED,
            sqlite_where=SEALED,
        )


def downgrade() -> None:
    op.drop_index("ix_sessions_sealed", table_name="sessions")
    op.drop_index("ix_sessions_last_used_at", table_name="sessions")
    op.drop_index("ix_sessions_expires", table_name="sessions")
