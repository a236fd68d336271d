"""Background work of a running server, and the janitor that `identity prune` runs once.

Every round does each item on its own: a key file that vanished, a database that is down or any
other error of one item is logged and the next item, and the next round, go on. Nothing here can
end the loop but the server's shutdown (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import delete

from identity.clock import Clock
from identity.store.database import Database
from identity.store.models import RATE_LIMITS, USED_ID_TOKENS, VERIFICATION_TOKENS
from identity.tokens.signing_keys import KeyManager

from .audit import AuditLog
from .sessions import Sessions

logger = logging.getLogger("identity.housekeeping")
KEY_RELOAD_INTERVAL = 30.0
JANITOR_INTERVAL = 600.0


class Janitor:
    """Deletes what has expired: used id_tokens, sessions, rate-limit windows, mail tokens,
    audit events past retention; forgets sealed refresh successors past the reuse interval."""

    def __init__(
        self,
        database: Database,
        sessions: Sessions,
        audit_log: AuditLog,
        *,
        clock: Clock = time.time,
    ) -> None:
        self._db = database
        self._sessions = sessions
        self._audit = audit_log
        self._clock = clock

    async def prune(self) -> dict[str, int | None]:
        """Each kind pruned on its own; None for a kind whose pruning failed (logged)."""
        jobs: dict[str, Callable[[], Awaitable[int]]] = {
            "used_id_tokens": self._expired(
                USED_ID_TOKENS.delete().where(USED_ID_TOKENS.c.expires_at < self._now())
            ),
            "sessions": self._sessions.prune,
            "rate_limits": self._expired(
                delete(RATE_LIMITS).where(RATE_LIMITS.c.expires_at < self._now())
            ),
            "verification_tokens": self._expired(
                delete(VERIFICATION_TOKENS).where(VERIFICATION_TOKENS.c.expires < self._now())
            ),
            "audit_events": self._audit.prune,
        }
        done: dict[str, int | None] = {}
        for name, job in jobs.items():
            done[name] = await _guarded(f"pruning {name}", job)
        return done

    def _now(self) -> object:
        # The database's clock on PostgreSQL: a pruner whose host runs ahead must not delete
        # what the other replicas still rely on (docs/sessions.md).
        return self._db.shared_now(self._clock)

    def _expired(self, statement: object) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            async with self._db.transaction() as tx:
                return int((await tx.execute(statement)).rowcount)

        return run


async def _guarded(what: str, job: Callable[[], Awaitable[int]]) -> int | None:
    try:
        return await job()
    except Exception as error:  # this item failed; the others and the next round go on
        logger.warning("%s failed", what, extra={"event": {"error": type(error).__name__}})
        return None


async def run(
    keys: KeyManager,
    janitor: Janitor,
    sessions: Sessions,
    *,
    key_interval: float = KEY_RELOAD_INTERVAL,
    janitor_interval: float = JANITOR_INTERVAL,
) -> None:
    """Forever: notice key changes on disk; forget sealed successors; prune now and then."""
    last_janitor = time.monotonic()
    while True:
        await asyncio.sleep(key_interval)
        try:
            keys.reload_if_changed()
        except Exception as error:  # reload logs what it can; anything else must not end us
            logger.error("key reload failed", extra={"event": {"error": type(error).__name__}})
        await _guarded("forgetting sealed successors", sessions.forget_sealed)
        if time.monotonic() - last_janitor >= janitor_interval:
            last_janitor = time.monotonic()
            try:
                await janitor.prune()  # guards each kind itself; this catches the rest
            except Exception as error:
                logger.error("pruning failed", extra={"event": {"error": type(error).__name__}})
