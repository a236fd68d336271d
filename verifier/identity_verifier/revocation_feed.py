"""Following the issuer's revocation feed, for `TokenVerifier(..., revocations=...)`.

    feed = RevocationFeed("https://id.example.com", ("api", "its-secret"), poll=10)
    if await feed.revoked(claims.session_id): ...   # refuse the token

`GET {issuer}/revocations?after=<cursor>` (HTTP Basic as a configured client) lists the sessions
ended whose access tokens may still be unexpired, each with the time the last of them expires.
The follower keeps that list, asks for what is new at most once per `poll` seconds and forgets
entries once they expire. The first `revoked` call after the interval reads the feed (so a
revoked session's token is refused within `poll` seconds of its end) for at most `DEADLINE`
seconds; calls meanwhile answer from the last list at once, so a slow issuer delays one call,
never every verification.

While the feed cannot be read (no answer in time, an error status, a body it does not
understand: not JSON, over `MAX_BODY` bytes, an entry out of range) it keeps its last list, sets
`available` to False, logs a warning once, and tries again a poll later: it never refuses every
token because the issuer is unreachable, and never raises. Only the standard library and httpx
are imported here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

logger = logging.getLogger("identity.verifier")
MAX_PAGES = 20  # pages read in one poll; the rest wait for the next
DEADLINE = 5.0  # seconds for one whole poll, however the issuer answers
MAX_BODY = 1 << 20  # bytes of one page (the issuer's 500 entries are ~50 KB)
MAX_SID = 255  # characters of a session id
MAX_EXP = 2**53  # an `exp` past this is no time (the verifier's own bound for a token's)


class Malformed(ValueError):
    """A page the follower does not understand."""


class RevocationFeed:
    def __init__(
        self,
        issuer: str,
        credentials: tuple[str, str],
        *,
        http_client: httpx.AsyncClient,
        poll: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = issuer.rstrip("/") + "/revocations"
        self._auth = httpx.BasicAuth(*credentials)
        self._http = http_client
        self.poll = poll
        self._clock = clock
        self._revoked: dict[str, float] = {}  # sid -> when its last access token expires
        self._cursor: str | None = None
        self._next_poll = float("-inf")
        self._lock = asyncio.Lock()
        self.available = True  # False while the feed cannot be read (the last list is kept)
        self.last_read: float | None = None  # when the feed was last read in full

    async def revoked(self, session_id: str) -> bool:
        """Whether the session is listed as ended (reading what is new first, when due and no
        other call is reading it already)."""
        if self._clock() >= self._next_poll and not self._lock.locked():
            await self.refresh()
        return self._revoked.get(session_id, float("-inf")) > self._clock()

    async def refresh(self) -> None:
        async with self._lock:
            if self._clock() < self._next_poll:  # read meanwhile by a concurrent caller
                return
            # Moved before reading: calls arriving meanwhile answer from the last list.
            self._next_poll = self._clock() + self.poll
            try:
                async with asyncio.timeout(DEADLINE):
                    await self._read()
            except Exception as error:  # whatever the issuer serves: a failed poll, never raised
                if self.available:
                    logger.warning(
                        "revocation feed unavailable; keeping the last list",
                        extra={"event": {"error": type(error).__name__, "url": self.url}},
                    )
                self.available = False
            else:
                if not self.available:
                    logger.info("revocation feed available again", extra={"event": {}})
                self.available = True
                self.last_read = self._clock()
            now = self._clock()
            self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}

    async def _read(self) -> None:
        for _ in range(MAX_PAGES):
            params = {"after": self._cursor} if self._cursor is not None else {}
            # Uncompressed only: MAX_BODY then bounds what is held, not a compressed size.
            headers = {"Accept-Encoding": "identity"}
            request = self._http.build_request("GET", self.url, params=params, headers=headers)
            response = await self._http.send(
                request, auth=self._auth, stream=True, follow_redirects=False
            )
            try:
                if response.status_code != 200:
                    raise Malformed(f"status {response.status_code}")
                if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                    raise Malformed("compressed page")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise Malformed("page too large")
            finally:
                await response.aclose()
            entries, cursor = _parse(json.loads(body))
            # Applied only once the whole page is understood, the cursor with it.
            for sid, exp in entries:
                self._revoked[sid] = max(exp, self._revoked.get(sid, float("-inf")))
            self._cursor = cursor
            if not entries:
                return


def _parse(page: Any) -> tuple[list[tuple[str, float]], str]:
    if not isinstance(page, dict):
        raise Malformed("not a revocation page")
    entries, cursor = page.get("revoked"), page.get("next_cursor")
    if not isinstance(entries, list) or not isinstance(cursor, str):
        raise Malformed("not a revocation page")
    parsed = []
    for entry in entries:
        sid = entry.get("sid") if isinstance(entry, dict) else None
        exp = entry.get("exp") if isinstance(entry, dict) else None
        # A hostile `exp` (10**400 is valid JSON) would overflow float(): range-checked first.
        if not isinstance(sid, str) or not 0 < len(sid) <= MAX_SID:
            raise Malformed("not a revocation entry")
        if type(exp) is not int or not 0 <= exp <= MAX_EXP:
            raise Malformed("not a revocation entry")
        parsed.append((sid, float(exp)))
    return parsed, cursor
