"""Following the issuer's revocation feed, for `TokenVerifier(..., revocations=...)`.

    feed = RevocationFeed("https://id.example.com", ("api", "its-secret"), poll=10)
    if await feed.revoked(claims.session_id): ...   # refuse the token

`GET {issuer}/revocations?after=<cursor>` (HTTP Basic as a configured client) lists the sessions
ended whose access tokens may still be unexpired, each with the time the last of them expires.
The follower keeps that list, asks for what is new at most once per `poll` seconds (the first
`revoked` call after the interval waits for the answer, so a revoked session's token is refused
within `poll` seconds of its end) and forgets entries once they expire.

While the feed cannot be read (no answer, an error status, a body it does not understand) it
keeps its last list, sets `available` to False, logs a warning once, and tries again a poll
later: it never refuses every token because the issuer is unreachable. Only the standard library
and httpx are imported here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

logger = logging.getLogger("identity.verifier")
MAX_PAGES = 20  # pages read in one poll; the rest wait for the next


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
        """Whether the session is listed as ended (reading what is new first, when due)."""
        if self._clock() >= self._next_poll:
            await self.refresh()
        return self._revoked.get(session_id, float("-inf")) > self._clock()

    async def refresh(self) -> None:
        async with self._lock:
            if self._clock() < self._next_poll:  # read meanwhile by a concurrent caller
                return
            try:
                await self._read()
            except (httpx.HTTPError, ValueError, TypeError, KeyError) as error:
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
            finally:
                self._next_poll = self._clock() + self.poll
            now = self._clock()
            self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}

    async def _read(self) -> None:
        for _ in range(MAX_PAGES):
            params = {"after": self._cursor} if self._cursor is not None else {}
            response = await self._http.get(
                self.url, params=params, auth=self._auth, follow_redirects=False
            )
            if response.status_code != 200:
                raise ValueError(f"status {response.status_code}")
            page: Any = response.json()
            entries, cursor = page["revoked"], page["next_cursor"]
            if not isinstance(entries, list) or not isinstance(cursor, str):
                raise TypeError("not a revocation page")
            for entry in entries:
                sid, exp = entry["sid"], entry["exp"]
                if not isinstance(sid, str) or not isinstance(exp, int):
                    raise TypeError("not a revocation entry")
                self._revoked[sid] = max(float(exp), self._revoked.get(sid, float("-inf")))
            self._cursor = cursor
            if not entries:
                return
