"""Apple token revocations from the outbox (docs/signals.md, "Apple token revocation").

- outbox.sealed: the refresh token an `apple.revoke` notice revokes, sealed as it is in
  `accounts` (Fernet under IDENTITY_TOKEN_ENCRYPTION_KEY), opened only when it is sent and
  cleared once the notice is delivered or dropped. NULL for every other notice.

A nullable column only: existing rows stay as they are, and PostgreSQL's functions (which name
the columns they insert) are unchanged, so no frozen copy of them is installed here. The
downgrade drops the column with any revocation still pending (their tokens go with it).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("sealed", sa.Text(), nullable=True))


def downgrade() -> None:
    # The previous release knows no apple.revoke notice: without its token it is nothing.
    op.execute("DELETE FROM outbox WHERE destination LIKE 'apple:%'")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("sealed")
