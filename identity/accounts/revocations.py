"""The revocation feed: ended sessions whose access tokens may still be unexpired
(docs/notifications.md, "Revocation feed").

Rows are read in id order after the reader's cursor, and ids are taken in the order their rows
commit, so a cursor past a row's id never skips a row committed later:
- on PostgreSQL a deferred trigger (migration 0013) gives each row its id at commit, under a
  transaction-level advisory lock held until the commit: writers of revocations commit one at a
  time, and only across their commit. Nothing outside this database holds the feed back (the
  earlier `pg_snapshot_xmin` bound was cluster-wide: any open transaction on the server held
  every revocation back);
- SQLite has one writer at a time, and AUTOINCREMENT never hands out an id twice, even once the
  pruner emptied the table.

A cursor above every id the database has handed out (one from before a dump and restore into
a new cluster, or from another database) starts over from the beginning: entries are
idempotent, and a cursor that sorts after every future row would read nothing for ever.
Cursors of the earlier feed, ordered by (transaction id, row id), are read on from the first
row they had not reached.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime

from identity.clock import as_utc
from identity.errors import InvalidRequest
from identity.store.database import Database

PAGE = 500
_CURSOR = re.compile(r"(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})")
# Expired by the database's clock on PostgreSQL, by the service's on SQLite.
_FEED = {
    "postgresql": """
SELECT id, session_id, expires_at FROM revocations
WHERE id > $1 AND expires_at > now() ORDER BY id LIMIT $2
""",
    "sqlite": """
SELECT id, session_id, expires_at FROM revocations
WHERE id > $1 AND expires_at > $3 ORDER BY id LIMIT $2
""",
}
# Where a cursor reads on from, and the highest id the database has handed out.
_POSITION = {
    "postgresql": """
SELECT CASE
    WHEN $1::bigint = 0 THEN $2::bigint
    -- A transaction id this cluster has not issued yet: a cursor from another cluster.
    WHEN $1::bigint >= pg_snapshot_xmax(pg_current_snapshot())::text::bigint THEN 0
    -- A cursor of the feed in (txid, id) order: on from the first row it had not reached.
    ELSE coalesce(
        (SELECT min(id) - 1 FROM revocations WHERE (txid, id) > ($1::bigint, $2::bigint)),
        $2::bigint)
    END AS position,
    coalesce(pg_sequence_last_value(pg_get_serial_sequence('revocations', 'id')::regclass), 0)
        AS top
""",
    "sqlite": """
SELECT CASE WHEN $1 = 0 THEN $2 ELSE 0 END AS position,
       coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'revocations'), 0) AS top
""",
}
# The feed's hold-back: how long the oldest writer of revocations has been waiting for, or
# holding, the commit-order lock (migration 0013's key); 0 when none.
ORDER_LOCK = 0x1D3E_F33D
_LAG = """
SELECT coalesce(extract(epoch FROM now() - min(a.state_change)), 0)::float8 AS lag
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = $1 AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


@dataclass(frozen=True, slots=True)
class Revoked:
    sid: str
    exp: int  # when its last access token expires (skew included)


def encode_cursor(txid: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{txid}.{row_id}".encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> tuple[int, int]:
    """(transaction id, row id) of a cursor; none: the start. Anything else is a 400."""
    if cursor is None:
        return 0, 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest("after: not a cursor of this feed") from None
    match = _CURSOR.fullmatch(raw)
    if match is None or max(int(match.group(1)), int(match.group(2))) >= 2**63:
        raise InvalidRequest("after: not a cursor of this feed")
    return int(match.group(1)), int(match.group(2))


class Revocations:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def after(self, cursor: str | None, now: datetime) -> tuple[list[Revoked], str]:
        """The next page after `cursor`, and the cursor to continue from (the same position
        when nothing new is served)."""
        txid, row_id = decode_cursor(cursor)
        async with self._db.transaction() as tx:
            place = await tx.fetchone(_POSITION[tx.dialect], txid, row_id)
            position = int(place["position"])
            if position > int(place["top"]):  # never handed out here: start over
                position = 0
            if tx.dialect == "postgresql":
                rows = await tx.fetch(_FEED["postgresql"], position, PAGE)
            else:
                rows = await tx.fetch(_FEED["sqlite"], position, PAGE, now)
        revoked = [
            Revoked(str(r["session_id"]), int(as_utc(r["expires_at"]).timestamp())) for r in rows
        ]
        if rows:
            position = int(rows[-1]["id"])
        return revoked, encode_cursor(0, position)

    async def lag(self) -> float:
        """Seconds the oldest revocation not yet visible has waited on its commit (0 on
        SQLite, whose one writer never waits on another for its id)."""
        async with self._db.transaction() as tx:
            if tx.dialect != "postgresql":
                return 0.0
            row = await tx.fetchone(_LAG, ORDER_LOCK)
        return float(row["lag"])
