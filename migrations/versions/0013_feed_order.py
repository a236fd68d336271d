"""The revocation feed in commit order, and ids that are never handed out twice
(docs/notifications.md, "Revocation feed").

- PostgreSQL: a deferred trigger gives each new `revocations` row its id at commit time, under
  a transaction-level advisory lock: ids are then taken in the order their rows commit, and
  the feed reads them by id alone. No longer by transaction id below the cluster-wide
  `pg_snapshot_xmin`, which any open transaction of any database on the server held back.
  The lock is held only from the trigger to the commit; every writer of the table takes it,
  whichever code path (the app's end_sessions, identity_refresh, an operator's INSERT).
- SQLite: `revocations` and `outbox` become AUTOINCREMENT tables (a batch rebuild): without
  it SQLite hands out max(id)+1, so once the pruner had emptied a table its ids started at 1
  again: a follower's cursor skipped new revocations, and a receiver deduplicating by
  webhook-id (`msg_<outbox id>`) dropped new notices. PostgreSQL's sequences never go back.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# pg_advisory_xact_lock's key for "a revocation commits", 0x1D3EF33D: the same constant as
# ORDER_LOCK in identity/accounts/revocations.py.
_FUNCTION = """
CREATE FUNCTION identity_revocation_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Fired at commit (deferred): one writer at a time takes ids from here to its commit,
    -- so a row with a higher id is never visible before one with a lower id.
    PERFORM pg_advisory_xact_lock(490664765);
    UPDATE revocations SET id = nextval(pg_get_serial_sequence('revocations', 'id'))
    WHERE id = NEW.id;
    RETURN NULL;
END
$$
"""
_TRIGGER = """
CREATE CONSTRAINT TRIGGER revocations_commit_order AFTER INSERT ON revocations
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION identity_revocation_order()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION)
        op.execute(_TRIGGER)
        return
    for table in ("revocations", "outbox"):
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER revocations_commit_order ON revocations")
        op.execute("DROP FUNCTION identity_revocation_order()")
        return
    for table in ("revocations", "outbox"):
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass
