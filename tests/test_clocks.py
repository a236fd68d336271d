"""Replicas whose clocks disagree, on one PostgreSQL database, judge alike (docs/sessions.md).

The rotation's time and the reuse interval are the database's clock (`now()` inside the refresh
function), pruning compares with `now()` too, and a replay record is kept until the token's
`exp` + the skew + 5 minutes, derived from the token. Each service here has its own injected
clock, as two hosts would; the database has one. (SQLite is one process on one host: its clock
is the injected one, which the rest of the suite moves at will.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from identity.accounts.services import data_services
from identity.settings import Settings
from identity.store.database import Database

from .fakes import FakeClock, Issuers
from .support import Sql, exchange, refresh, running, truncate

pytestmark = pytest.mark.anyio


@pytest.fixture
def database_url(pg_database: str) -> str:
    """This module's tests are about PostgreSQL's clock: they run there only."""
    asyncio.run(truncate(pg_database))
    return pg_database


@pytest.fixture
def now(clock: FakeClock) -> float:
    """The fake providers and the first service on real time, as the database is."""
    clock.now = time.time()
    return clock.now


@pytest.fixture
async def janitors(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url)
    try:
        yield database
    finally:
        await database.close()


async def test_a_replica_ahead_answers_the_twin_tab_within_the_interval(
    settings: Settings, issuers: Issuers, clock: FakeClock, now: float, sql: Sql, janitors: Database
) -> None:
    """Two tabs refresh with one token; the second reaches a replica 15 s ahead, within the
    10 s interval by every clock that matters: the same successor, the session kept."""
    ahead = FakeClock(now + 15)
    async with (
        running(settings, issuers, clock) as (_, on_time),
        running(settings, issuers, ahead) as (_, fast),
    ):
        parent = (await exchange(on_time, issuers.google.mint())).json()["refresh_token"]
        rotated = await refresh(on_time, parent)
        assert rotated.status_code == 200
        twin = await refresh(fast, parent)
        assert twin.status_code == 200, twin.text
        assert twin.json()["refresh_token"] == rotated.json()["refresh_token"]
        # Its background work forgets no sealed successor still within the interval either.
        sessions = data_services(settings, janitors, clock=ahead).sessions
        assert await sessions.forget_sealed() == 0
        again = await refresh(on_time, parent)
        assert again.json()["refresh_token"] == rotated.json()["refresh_token"]
    assert await sql.events("refresh_reuse") == []
    assert await sql.scalar("SELECT count(*) FROM sessions") == 1


async def test_the_interval_is_real_time_on_the_database(
    settings: Settings, issuers: Issuers, clock: FakeClock, now: float, sql: Sql
) -> None:
    """No fake clock moves it: a 1-second interval ends after a second of real time."""
    one_second = dataclasses.replace(settings, refresh_reuse_interval=1)
    async with running(one_second, issuers, clock) as (_, client):
        parent = (await exchange(client, issuers.google.mint())).json()["refresh_token"]
        successor = (await refresh(client, parent)).json()["refresh_token"]
        clock.advance(3600)  # a replica's clock says nothing about it
        assert (await refresh(client, parent)).json()["refresh_token"] == successor
        await asyncio.sleep(1.2)
        assert (await refresh(client, parent)).status_code == 400  # reuse: revoked
    assert len(await sql.events("refresh_reuse")) == 1
    assert await sql.scalar("SELECT count(*) FROM sessions") == 0


@pytest.mark.parametrize("ahead", [120, 3600], ids=["120s", "an_hour"])
async def test_a_janitor_ahead_reopens_no_replay(
    settings: Settings,
    issuers: Issuers,
    clock: FakeClock,
    now: float,
    sql: Sql,
    janitors: Database,
    ahead: int,
) -> None:
    """`identity prune` on a host ahead: the token, still valid for the others, stays single
    use. (At 120 s the 5-minute margin alone would do; an hour shows the pruning itself is on
    the database's clock.)"""
    async with running(settings, issuers, clock) as (_, on_time):
        token = issuers.google.mint(exp=int(now) + 30)
        assert (await exchange(on_time, token)).status_code == 200
        janitor = data_services(settings, janitors, clock=FakeClock(now + ahead)).janitor
        pruned = await janitor.prune()
        assert pruned["used_id_tokens"] == 0
        assert (await exchange(on_time, token)).status_code == 400
    assert await sql.scalar("SELECT count(*) FROM used_id_tokens") == 1


async def test_a_replica_behind_finds_the_replay_record_kept(
    settings: Settings, issuers: Issuers, clock: FakeClock, now: float, sql: Sql, janitors: Database
) -> None:
    """A replica 120 s behind the database still accepts a token past its `exp` by the
    database's clock (within its skew): the record is kept 5 minutes longer than that."""
    behind = FakeClock(now - 120)
    async with running(settings, issuers, behind) as (_, slow):
        token = issuers.google.mint(iat=int(now) - 200, exp=int(now) - 100)
        assert (await exchange(slow, token)).status_code == 200
        await data_services(settings, janitors, clock=clock).janitor.prune()
        assert (await exchange(slow, token)).status_code == 400
    assert await sql.scalar("SELECT count(*) FROM sessions") == 1
