"""The background loop of every worker outlives any error of one of its items."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import pytest

from identity.accounts import housekeeping
from identity.accounts.audit import AuditLog
from identity.accounts.sessions import SessionPolicy, Sessions
from identity.store.database import Database

pytestmark = pytest.mark.anyio


class Flaky:
    """Raises on its first `failures` calls, then counts successes."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.successes = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        self.successes += 1
        return 0

    async def async_call(self) -> int:
        return self()


async def test_every_item_of_a_round_survives_the_others_and_the_next_round_runs() -> None:
    # A key file vanishing between listing and stat(), a database outage, anything else.
    reload = Flaky(2, FileNotFoundError("keys/rsa-1.pem"))
    forget = Flaky(2, ConnectionRefusedError())
    prune = Flaky(1, RuntimeError("boom"))
    keys = cast(Any, type("Keys", (), {"reload_if_changed": staticmethod(reload)})())
    sessions = cast(Any, type("S", (), {"forget_sealed": staticmethod(forget.async_call)})())
    janitor = cast(Any, type("J", (), {"prune": staticmethod(prune.async_call)})())
    task = asyncio.create_task(
        housekeeping.run(keys, janitor, sessions, key_interval=0.01, janitor_interval=0.0)
    )
    await asyncio.sleep(0.3)
    assert not task.done(), "the loop ended"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert reload.successes >= 3 and forget.successes >= 3
    assert prune.calls >= 3  # a round whose janitor failed did not stop the next ones


async def test_one_failing_kind_of_pruning_leaves_the_others(tmp_path: Any) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/none.db")  # no tables: each job fails
    sessions = Sessions(database, SessionPolicy(absolute_ttl=60, idle_ttl=60, reuse_interval=10))
    audit = AuditLog(database, retention=60)
    ok = Flaky(0, RuntimeError())
    cast(Any, sessions).prune = ok.async_call  # this one works
    try:
        done = await housekeeping.Janitor(database, sessions, audit).prune()
    finally:
        await database.close()
    assert done["sessions"] == 0 and ok.successes == 1
    assert done["used_id_tokens"] is None and done["audit_events"] is None  # failed, logged
