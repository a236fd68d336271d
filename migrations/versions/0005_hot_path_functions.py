"""PostgreSQL functions for the two hot writes: a sign-in and a refresh in one round trip each.

`identity_sign_in` is the sign-in transaction of identity/accounts/sign_in.py and
`identity_refresh` the rotation of identity/accounts/rotation.py, step for step (the Python
versions run on SQLite; the test suite runs every rule on both databases). Each is called as one
statement in autocommit, so the call is its own transaction. A concurrent change detected inside
raises serialization_failure (or a unique violation), which rolls the call back whole; the
caller retries it.

The definitions are this revision's frozen copies in migrations/sql/0005/, never edited once
shipped. To change a function, edit its living file in identity/store/sql/, copy it into
migrations/sql/<new revision>/, and write a migration that loads that copy on upgrade and the
previous revision's copy on downgrade (docs/architecture.md, "The SQL functions").

SQLite has no stored functions: nothing to do there.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Beside versions/, in the source tree and in the wheel (identity/migrations) alike.
FROZEN = Path(__file__).resolve().parent.parent / "sql" / revision


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute((FROZEN / "identity_sign_in.sql").read_text(encoding="utf-8"))
    op.execute((FROZEN / "identity_refresh.sql").read_text(encoding="utf-8"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS identity_refresh")
    op.execute("DROP FUNCTION IF EXISTS identity_sign_in")
