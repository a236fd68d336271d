"""The revocation feed: ended sessions whose access tokens may still be unexpired
(docs/notifications.md, "Revocation feed").

Rows are read in (transaction id, row id) order after the reader's cursor. On PostgreSQL a
sequence's values are not committed in order: a transaction that took id 5 may commit after one
that took id 6, and a cursor past 6 would skip 5 for ever. So the feed serves only rows written
by transactions older than every transaction still running (`pg_snapshot_xmin`): those have all
committed or rolled back, and any row written later carries a higher transaction id, so it sorts
after every cursor already handed out. A long transaction holds the feed back while it runs; it
never makes it skip. SQLite has one writer at a time, so its row ids commit in order (its
transaction id is 0).
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
_FEED = {
    "postgresql": """
SELECT id, txid, session_id, expires_at FROM revocations
WHERE (txid, id) > ($1, $2) AND expires_at > now()
  AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY txid, id LIMIT $3
""",
    "sqlite": """
SELECT id, txid, session_id, expires_at FROM revocations
WHERE id > $1 AND expires_at > $2
ORDER BY id LIMIT $3
""",
}


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
        """The next page after `cursor`, and the cursor to continue from (the same one when
        nothing new is served)."""
        txid, row_id = decode_cursor(cursor)
        async with self._db.transaction() as tx:
            if tx.dialect == "postgresql":
                rows = await tx.fetch(_FEED["postgresql"], txid, row_id, PAGE)
            else:
                rows = await tx.fetch(_FEED["sqlite"], row_id, now, PAGE)
        revoked = [
            Revoked(str(r["session_id"]), int(as_utc(r["expires_at"]).timestamp())) for r in rows
        ]
        if rows:
            txid, row_id = int(rows[-1]["txid"]), int(rows[-1]["id"])
        return revoked, encode_cursor(txid, row_id)
