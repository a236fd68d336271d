"""Security events from providers (docs/signals.md).

- received_signals: the `jti` of every security event received, per provider, kept until it
  could no longer be accepted (pruned by the janitor like used_id_tokens), so that a second
  delivery of one event changes nothing, even on another replica.
- undeliverable_addresses: addresses the provider said take no mail (Apple's relay with
  forwarding turned off); a verification mail to one is refused until it takes mail again.

No function is reloaded: the hot paths do not read either table.

Revision ID: 0008
Revises: 0006 (the lead rechains it after 0007 at merge)
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "received_signals",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", TIME, nullable=False),
    )
    op.create_index("ix_received_signals_expires_at", "received_signals", ["expires_at"])
    op.create_table(
        "undeliverable_addresses",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("since", TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("undeliverable_addresses")
    op.drop_index("ix_received_signals_expires_at", table_name="received_signals")
    op.drop_table("received_signals")
