"""Version 3 hardening: what a session was granted and started from; who proved an address;
suspended accounts; the hot-path functions that use them.

- sessions.audience: the audience the exchange granted (NULL: the configured default); every
  refresh mints with it, never wider.
- sessions.account_id (ON DELETE SET NULL) and sessions.upstream_sid (indexed): the provider
  account whose sign-in started the session, and the provider's session id, so that a
  provider's signal ends exactly those sessions.
- users.email_verified_by: who proved the address, a provider's name or `mail`. **Backfill**:
  none. Existing verified addresses keep NULL, "verified before 0006, by whom unknown", which
  the sign-in treats like `mail`: never enough to link a new account by address (the
  conservative reading: a phished confirmation cannot be told from a provider's proof after the
  fact). The next sign-in through an account whose provider is authoritative for that same
  address records that provider, and from then on the address links again.
- accounts.suspended_at: a sign-in through a suspended account is refused (403).
- identity_sign_in and identity_refresh from migrations/sql/0006/ (docs/architecture.md, "The
  SQL functions"): linking by address refused into a holder with an account of the same provider
  or an address not proven by a provider; suspended accounts refused; the session's audience,
  account and upstream sid stored; the refresh returns the audience, takes its rotation time
  and reuse interval from the database's clock, and leaves another client's earlier token
  unrevoked. Both gain result columns (and the sign-in two parameters, with defaults so that the
  previous release's calls stay valid during a rolling upgrade): the old signatures are dropped
  first, here and on downgrade.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
SQL = Path(__file__).resolve().parent.parent / "sql"
FROZEN = SQL / revision
PREVIOUS = SQL / "0005"
# Each function's parameter types, as installed by 0005 and by this revision.
SIGN_IN_0005 = (
    "text, timestamptz, text, text, text, boolean, text, text, text, text, text, text, "
    "timestamptz, text, timestamptz, text, text, text, integer, bigint, integer, bigint, "
    "timestamptz, text, text, text, bigint, text, text, text, text, text, text, text"
)
SIGN_IN_0006 = f"{SIGN_IN_0005}, text, text"
REFRESH = (
    "text, text, text[], text, bytea, integer, timestamptz, timestamptz, text, integer, bigint, "
    "integer, bigint, timestamptz, text, text, text, text"
)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_verified_by", sa.String(32), nullable=True))
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("suspended_at", TIME, nullable=True))
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("audience", sa.Text(), nullable=True))
        batch.add_column(sa.Column("account_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("upstream_sid", sa.String(255), nullable=True))
        batch.create_foreign_key(
            "fk_sessions_account_id_accounts",
            "accounts",
            ["account_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index("ix_sessions_account_id", ["account_id"])
        batch.create_index("ix_sessions_upstream_sid", ["upstream_sid"])
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS identity_sign_in({SIGN_IN_0005})")
    op.execute(f"DROP FUNCTION IF EXISTS identity_refresh({REFRESH})")
    op.execute((FROZEN / "identity_sign_in.sql").read_text(encoding="utf-8"))
    op.execute((FROZEN / "identity_refresh.sql").read_text(encoding="utf-8"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS identity_sign_in({SIGN_IN_0006})")
        op.execute(f"DROP FUNCTION IF EXISTS identity_refresh({REFRESH})")
        op.execute((PREVIOUS / "identity_sign_in.sql").read_text(encoding="utf-8"))
        op.execute((PREVIOUS / "identity_refresh.sql").read_text(encoding="utf-8"))
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_upstream_sid")
        batch.drop_index("ix_sessions_account_id")
        batch.drop_constraint("fk_sessions_account_id_accounts", type_="foreignkey")
        batch.drop_column("upstream_sid")
        batch.drop_column("account_id")
        batch.drop_column("audience")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("suspended_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_verified_by")
