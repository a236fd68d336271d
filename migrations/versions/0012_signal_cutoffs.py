"""What a provider's signal leaves behind for later sign-ins (docs/signals.md, "Guarantees").

- accounts.sessions_revoked_at: when a signal last ended the account's sessions (the later of
  the event's `iat` and its arrival); an id_token issued no later is refused at sign-in.
- accounts.suspension_event_at: the `iat` of the last suspend or enable event applied; an
  older one arriving late is ignored.
- ended_upstream_sessions: upstream sessions (provider, `sid`) a back-channel logout ended,
  kept while an id_token carrying one could still be accepted (pruned by the janitor like
  used_id_tokens); such an id_token is refused.
- identity_sign_in and identity_refresh from migrations/sql/0012/: the sign-in locks the
  account it finds (a concurrent suspension is seen) and refuses the id_tokens above
  ("revoked"); the refresh refuses a session whose account is suspended. The sign-in gains a
  parameter with a default (the previous release's calls stay valid during a rolling upgrade);
  its old signature is dropped first, here and on downgrade.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
SQL = Path(__file__).resolve().parent.parent / "sql"
FROZEN = SQL / revision
PREVIOUS = SQL / "0007"  # the functions 0008-0011 left as they were
# identity_sign_in's parameter types, as installed by 0007 and by this revision.
SIGN_IN_0007 = (
    "text, timestamptz, text, text, text, boolean, text, text, text, text, text, text, "
    "timestamptz, text, timestamptz, text, text, text, integer, bigint, integer, bigint, "
    "timestamptz, text, text, text, bigint, text, text, text, text, text, text, text, text, text, "
    "text[]"
)
SIGN_IN_0012 = f"{SIGN_IN_0007}, timestamptz"


def upgrade() -> None:
    op.add_column("accounts", sa.Column("suspension_event_at", TIME, nullable=True))
    op.add_column("accounts", sa.Column("sessions_revoked_at", TIME, nullable=True))
    op.create_table(
        "ended_upstream_sessions",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("sid", sa.String(255), primary_key=True),
        sa.Column("expires_at", TIME, nullable=False),
    )
    op.create_index(
        "ix_ended_upstream_sessions_expires_at", "ended_upstream_sessions", ["expires_at"]
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS identity_sign_in({SIGN_IN_0007})")
    op.execute((FROZEN / "identity_sign_in.sql").read_text(encoding="utf-8"))
    op.execute((FROZEN / "identity_refresh.sql").read_text(encoding="utf-8"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS identity_sign_in({SIGN_IN_0012})")
        op.execute((PREVIOUS / "identity_sign_in.sql").read_text(encoding="utf-8"))
        op.execute((PREVIOUS / "identity_refresh.sql").read_text(encoding="utf-8"))
    op.drop_index("ix_ended_upstream_sessions_expires_at", table_name="ended_upstream_sessions")
    op.drop_table("ended_upstream_sessions")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("sessions_revoked_at")
        batch.drop_column("suspension_event_at")
