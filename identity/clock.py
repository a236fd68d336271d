"""Time: the one `Clock` type every collaborator takes, and the two conversions the API needs.

A clock is any zero-argument callable returning Unix seconds (`time.time` in production, a fake
in tests), so expiry rules are tested by moving time instead of sleeping.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]
_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def utc(timestamp: float) -> datetime:
    """A timezone-aware UTC datetime from Unix seconds."""
    return datetime.fromtimestamp(timestamp, UTC)


def as_utc(value: datetime | str) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back text, PostgreSQL datetimes)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, as the API renders every time."""
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_duration(text: str) -> int:
    """Seconds in `30s`, `15m`, `24h` or `30d`; ValueError for anything else."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r}: use a number and s, m, h or d (e.g. 24h, 30d)")
    return int(match.group(1)) * _UNITS[match.group(2)]
