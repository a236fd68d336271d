"""Signing keys in the database, sealed under IDENTITY_KEY_ENCRYPTION_KEY (docs/operations.md,
"Keys"): one row per key, the private key a Fernet token, the public JWK in the clear. Used only
when IDENTITY_KEY_ENCRYPTION_KEY is set; the key directory is untouched either way. Downgrade
drops the table (and the keys in it: import them into a directory first if they must live on).

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activates_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sealed_key", sa.Text(), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
