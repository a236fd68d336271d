"""The admin listings' query inputs, each read by one validated parser (docs/admin.md).

`limit`, `since` and the two cursors arrive as text from a caller who may send anything: each
parser accepts exactly its form — ASCII digits only (`str.isdigit` also passes `²` and `٣`),
values inside the range the database and `datetime` can hold — and answers anything else with a
400 `invalid_request`, never an exception of its own (docs/security.md, "Admin inputs").
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta

from identity.errors import InvalidRequest

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Microseconds from the epoch to the last instant a `datetime` holds: a cursor past it is forged.
_MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
_MAX_EVENT_ID = 2**63 - 1  # a BIGINT
_DIGITS = re.compile(r"[0-9]{1,19}")
_USER_CURSOR = re.compile(r"([0-9]{1,18}):([A-Za-z0-9_-]{1,32})")
_EVENT_CURSOR = re.compile(r"[1-9][0-9]{0,18}")
_NOT_A_CURSOR = "cursor: not a cursor of this listing"


def limit(raw: str | None) -> int:
    """A page size: absent or empty → the default; else ASCII digits from 1 to MAX_LIMIT."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def since(raw: str | None) -> float | None:
    """An ISO 8601 time (UTC when it names no offset), as seconds from the epoch; a time that
    falls outside the years 1 to 9999 in UTC is a 400 like any other bad time."""
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        # Within range in UTC, and back again: what the query's `utc()` will do with it.
        stamp = moment.astimezone(UTC).timestamp()
        datetime.fromtimestamp(stamp, UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidRequest("since: an ISO 8601 time, such as 2026-12-01T00:00:00Z") from None
    return stamp


def _unwrap(cursor: str) -> str:
    if len(cursor) > 200:
        raise InvalidRequest(_NOT_A_CURSOR)
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest(_NOT_A_CURSOR) from None


def _wrap(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def user_cursor(created_at: datetime, user_id: str) -> str:
    micros = (created_at - EPOCH) // timedelta(microseconds=1)  # exact, unlike a float
    return _wrap(f"{micros}:{user_id}")


def read_user_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of a users cursor; anything else is a 400, never a different query."""
    match = _USER_CURSOR.fullmatch(_unwrap(cursor))
    if match is None or int(match.group(1)) > _MAX_MICROS:
        raise InvalidRequest(_NOT_A_CURSOR)
    return EPOCH + timedelta(microseconds=int(match.group(1))), match.group(2)


def event_cursor(event_id: int) -> str:
    return _wrap(str(event_id))


def read_event_cursor(cursor: str) -> int:
    """The event id of an events cursor: 1 to a BIGINT's largest; anything else is a 400."""
    raw = _unwrap(cursor)
    if not _EVENT_CURSOR.fullmatch(raw) or int(raw) > _MAX_EVENT_ID:
        raise InvalidRequest(_NOT_A_CURSOR)
    return int(raw)
