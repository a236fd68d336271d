"""The revocation feed (GET /revocations) and `TokenVerifier` following it: a revoked session's
token is refused within the poll interval; a row committed late is never skipped; while the
feed cannot be read the verifier keeps its last list and refuses nothing new."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from identity.accounts.revocations import ORDER_LOCK, encode_cursor
from identity.settings import Settings
from identity.verifier import InvalidAccessToken, TokenVerifier
from identity_verifier import revocation_feed
from identity_verifier.revocation_feed import MAX_BODY, RevocationFeed

from .fakes import FakeClock, Issuers
from .support import ISSUER, LONG_AGO, Sql, basic, bearer, exchange, running

pytestmark = pytest.mark.anyio

SECRETS = {"web": "web-secret-0123456789abcdef", "api": "api-secret-0123456789abcdef"}
WEB = basic("web", SECRETS["web"])
API = basic("api", SECRETS["api"])


@pytest.fixture
async def served(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    changed = dataclasses.replace(settings, clients=SECRETS)
    async with running(changed, issuers, clock, delivery_interval=3600) as pair:
        yield pair


async def signed_in(client: httpx.AsyncClient, issuers: Issuers) -> dict[str, Any]:
    response = await exchange(client, issuers.google.mint(), headers=WEB)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def sid_of(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["sid"])


async def feed(client: httpx.AsyncClient, after: str | None = None) -> dict[str, Any]:
    """A page of the feed. On a PostgreSQL server shared with others a page may be held back
    while some older transaction runs (docs/notifications.md): a non-empty answer is waited
    for a few seconds, as a follower would."""
    for _ in range(50):
        page = await _page(client, after)
        if page["revoked"]:
            return page
        await asyncio.sleep(0.1)
    return page


async def _page(client: httpx.AsyncClient, after: str | None = None) -> dict[str, Any]:
    response = await client.get(
        "/revocations", params={"after": after} if after else {}, headers=API
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_feed_lists_ended_sessions_once_after_each_cursor(
    served: tuple[Starlette, httpx.AsyncClient], issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    _, client = served
    assert (await client.get("/revocations")).status_code == 401  # any client, but a client
    assert (
        await client.get("/revocations", params={"after": "x!"}, headers=API)
    ).status_code == 400
    first, second = await signed_in(client, issuers), await signed_in(client, issuers)
    empty = await feed(client)
    assert empty["revoked"] == []
    await client.post("/auth/logout", headers=bearer(first["access_token"]))
    page = await feed(client, empty["next_cursor"])
    expected_exp = int(clock()) + settings_ttl()
    assert page["revoked"] == [{"sid": sid_of(first["access_token"]), "exp": expected_exp}]
    assert (await feed(client, page["next_cursor"]))["revoked"] == []
    await client.post("/auth/logout", headers=bearer(second["access_token"]))
    later = await feed(client, page["next_cursor"])
    assert [r["sid"] for r in later["revoked"]] == [sid_of(second["access_token"])]
    # From the start: both; once their tokens have all expired: neither.
    assert len((await feed(client))["revoked"]) == 2
    await sql.set_time("revocations", "expires_at", LONG_AGO)
    assert (await feed(client))["revoked"] == []


def settings_ttl() -> int:
    return Settings().access_token_ttl + Settings().clock_skew


async def test_a_row_committed_late_is_not_skipped(
    served: tuple[Starlette, httpx.AsyncClient], issuers: Issuers, database_url: str
) -> None:
    """A transaction that wrote a revocation first and commits after a later one: ids are
    taken at commit, so the later one is served at once, and the first after it, past the
    cursor already handed out."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite admits one writer at a time: nothing commits out of order")
    _, client = served
    start = (await feed(client))["next_cursor"]
    plain = make_url(database_url).set(drivername="postgresql")
    slow = await asyncpg.connect(plain.render_as_string(hide_password=False))
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute(
            "INSERT INTO revocations (txid, session_id, client_id, user_id, ended_at, expires_at)"
            " VALUES (pg_current_xact_id()::text::bigint, 'slow-session', 'web', 'u', now(),"
            " now() + interval '1 hour')"
        )
        tokens = await signed_in(client, issuers)
        await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
        first = await _page(client, start)  # not held back by the transaction still open
        assert [r["sid"] for r in first["revoked"]] == [sid_of(tokens["access_token"])]
        await transaction.commit()
    finally:
        await slow.close()
    page = await _page(client, first["next_cursor"])
    assert [r["sid"] for r in page["revoked"]] == ["slow-session"]


async def test_another_databases_open_transaction_does_not_hold_the_feed_back(
    served: tuple[Starlette, httpx.AsyncClient], issuers: Issuers, database_url: str
) -> None:
    """An idle transaction holding a transaction id, anywhere on the server (here in another
    database), does not hold revocations back."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    from .conftest import direct

    _, client = served
    start = (await _page(client))["next_cursor"]
    other = make_url(direct(database_url)).set(drivername="postgresql", database="postgres")
    neighbour = await asyncpg.connect(other.render_as_string(hide_password=False))
    try:
        transaction = neighbour.transaction()
        await transaction.start()
        await neighbour.fetchval("SELECT pg_current_xact_id()")  # takes an xid, writes nothing
        victim = await signed_in(client, issuers)
        await client.post("/auth/logout", headers=bearer(victim["access_token"]))
        body = await _page(client, start)  # at once: nothing to wait for
        assert [r["sid"] for r in body["revoked"]] == [sid_of(victim["access_token"])]
    finally:
        await neighbour.close()


async def test_sqlite_a_revocation_after_the_feed_was_pruned_empty_reaches_followers(
    served: tuple[Starlette, httpx.AsyncClient], issuers: Issuers, sql: Sql, database_url: str
) -> None:
    """Once the pruner has deleted every expired row (a quiet spell longer than the token
    lifetime), the next revocation still gets an id past every follower's cursor."""
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's sequence never goes back")
    _, client = served
    for _ in range(3):  # a follower has read three revocations
        tokens = await signed_in(client, issuers)
        await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    cursor = (await feed(client))["next_cursor"]
    async with sql.engine.begin() as connection:  # what the pruner does to expired rows
        await connection.execute(text("DELETE FROM revocations"))
    victim = await signed_in(client, issuers)
    await client.post("/auth/logout", headers=bearer(victim["access_token"]))
    assert await sql.scalar("SELECT max(id) FROM revocations") == 4  # never 1 again
    seen = (await feed(client, cursor))["revoked"]
    assert [r["sid"] for r in seen] == [sid_of(victim["access_token"])]


async def test_a_cursor_from_before_a_restore_starts_over(
    served: tuple[Starlette, httpx.AsyncClient], issuers: Issuers
) -> None:
    """A cursor above anything this database has handed out (from before a dump and restore
    into a new cluster, whose transaction ids start low again) would sort after every new row;
    it is read from the beginning instead, in either cursor form."""
    _, client = served
    alive = await signed_in(client, issuers)
    victim = await signed_in(client, issuers)
    await client.post("/auth/logout", headers=bearer(victim["access_token"]))
    for old in (encode_cursor(2**40, 10_000), encode_cursor(0, 10_000)):
        body = await _page(client, old)
        assert [r["sid"] for r in body["revoked"]] == [sid_of(victim["access_token"])]
        again = await _page(client, body["next_cursor"])
        assert again == {"revoked": [], "next_cursor": body["next_cursor"]}
    assert alive  # a session still alive is never listed


def verifier_for(app: Starlette, clock: FakeClock, failing: list[bool]) -> TokenVerifier:
    """A downstream service's verifier, reaching the service through a transport that can
    make the feed fail."""
    inner = httpx.ASGITransport(app=app)

    class Transport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if failing[0] and request.url.path == "/revocations":
                return httpx.Response(503)
            return await inner.handle_async_request(request)

    http = httpx.AsyncClient(transport=Transport(), base_url=ISSUER)
    return TokenVerifier(
        ISSUER, ISSUER, http_client=http, clock=clock, revocations=("api", SECRETS["api"]), poll=10
    )


async def test_the_verifier_refuses_a_revoked_sessions_token_within_its_poll(
    served: tuple[Starlette, httpx.AsyncClient], issuers: Issuers, clock: FakeClock
) -> None:
    app, client = served
    verifier = verifier_for(app, clock, [False])
    tokens = await signed_in(client, issuers)
    other = await signed_in(client, issuers)
    assert (await verifier.verify(tokens["access_token"])).session_id == sid_of(
        tokens["access_token"]
    )
    await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    clock.advance(10)  # one poll interval later
    with pytest.raises(InvalidAccessToken) as refused:
        await verifier.verify(tokens["access_token"])
    assert refused.value.reason == "revoked"
    assert await verifier.verify(other["access_token"])  # the others still pass
    assert verifier.revocations is not None and verifier.revocations.available


async def test_while_the_feed_is_unreadable_the_last_list_is_kept(
    served: tuple[Starlette, httpx.AsyncClient],
    issuers: Issuers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, client = served
    failing = [False]
    verifier = verifier_for(app, clock, failing)
    ended, alive, later = [await signed_in(client, issuers) for _ in range(3)]
    await client.post("/auth/logout", headers=bearer(ended["access_token"]))
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(ended["access_token"])
    failing[0] = True
    await client.post("/auth/logout", headers=bearer(later["access_token"]))
    clock.advance(10)
    with caplog.at_level(logging.WARNING, logger="identity.verifier"):
        assert await verifier.verify(alive["access_token"])  # never refuses everything
        with pytest.raises(InvalidAccessToken):  # the last list is kept
            await verifier.verify(ended["access_token"])
        # What it could not read, it cannot know: accepted until the feed is back.
        assert await verifier.verify(later["access_token"])
    assert verifier.revocations is not None and not verifier.revocations.available
    assert "revocation feed unavailable" in caplog.text
    failing[0] = False
    clock.advance(10)
    with pytest.raises(InvalidAccessToken):
        await verifier.verify(later["access_token"])
    assert verifier.revocations.available


async def test_a_revocation_waiting_on_its_commit_shows_as_feed_lag(
    served: tuple[Starlette, httpx.AsyncClient], database_url: str
) -> None:
    """Revocations commit one at a time (their ids are taken at commit, under a lock): a
    writer stuck in its commit (a synchronous standby gone, say) holds the others, and the
    metric says for how long."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's one writer never waits on another for its id")
    from .conftest import direct

    app, client = served
    plain = make_url(direct(database_url)).set(drivername="postgresql")
    stuck = await asyncpg.connect(plain.render_as_string(hide_password=False))
    try:
        transaction = stuck.transaction()
        await transaction.start()
        await stuck.execute("SELECT pg_advisory_xact_lock($1)", ORDER_LOCK)
        await asyncio.sleep(1.1)
        await app.state.deliveries.round()
        metrics = (await client.get("/metrics")).text
        lag = next(
            float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("identity_revocation_feed_lag_seconds ")
        )
        assert 1.0 <= lag < 30
    finally:
        await stuck.close()
    await app.state.deliveries.round()
    assert "identity_revocation_feed_lag_seconds 0.0" in (await client.get("/metrics")).text


# -- The follower against a hostile or slow feed ------------------------------------------


def _follower(handle: Any, now: list[float]) -> RevocationFeed:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return RevocationFeed(
        "https://id.example", ("api", "x"), http_client=http, clock=lambda: now[0]
    )


@pytest.mark.parametrize(
    "entry",
    [
        b'{"sid": "s1", "exp": 1' + b"0" * 400 + b"}",  # valid JSON, overflows float()
        b'{"sid": "s1", "exp": 1' + b"0" * 5000 + b"}",  # past Python's digit limit
        b'{"sid": "s1", "exp": -1}',
        b'{"sid": "s1", "exp": true}',
        b'{"sid": "s1", "exp": 1.5}',
        b'{"sid": "", "exp": 2000000}',
        b'{"sid": "' + b"s" * 256 + b'", "exp": 2000000}',
        b'"s1"',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
async def test_a_hostile_feed_entry_does_not_jam_the_follower(
    caplog: pytest.LogCaptureFixture, entry: bytes
) -> None:
    """A page it does not understand is a failed poll: nothing raised (a 503 downstream for
    every request), the last list kept, `available` False and a warning logged. The good entry
    beside it is not applied without its page's cursor."""
    now = [1_000_000.0]
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.params.get("after", ""))
        good = b'{"sid": "s0", "exp": 2000000}'
        body = b'{"revoked": [' + good + b", " + entry + b'], "next_cursor": "c1"}'
        return httpx.Response(200, content=body)

    follower = _follower(handle, now)
    with caplog.at_level(logging.WARNING, logger="identity.verifier"):
        for _ in range(3):
            assert not await follower.revoked("s0")
            now[0] += 10
    assert not follower.available
    assert caplog.text.count("revocation feed unavailable") == 1, caplog.text
    assert calls == ["", "", ""]  # polled again each interval, from the same cursor


async def test_a_follower_reads_past_a_good_page_and_refuses_its_sessions() -> None:
    now = [1_000_000.0]

    def handle(request: httpx.Request) -> httpx.Response:
        if not request.url.params.get("after"):
            return httpx.Response(
                200, json={"revoked": [{"sid": "s1", "exp": 1_000_900}], "next_cursor": "c1"}
            )
        return httpx.Response(200, json={"revoked": [], "next_cursor": "c1"})

    follower = _follower(handle, now)
    assert await follower.revoked("s1")
    assert not await follower.revoked("s2")
    assert follower.available


class _SlowFeed(httpx.AsyncBaseTransport):
    """An issuer whose feed answers slowly (unreachable, overloaded, or dripping bytes)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.delay)
        return httpx.Response(200, json={"revoked": [], "next_cursor": "c"})


async def test_a_slow_feed_holds_only_the_one_caller_that_polls() -> None:
    """Requests arriving while a poll is in flight answer from the last list at once; only the
    caller that polls waits. Here 20 concurrent verifications while a 2 s poll is in flight."""
    http = httpx.AsyncClient(transport=_SlowFeed(2.0))
    feed = RevocationFeed("https://id.example", ("api", "x"), http_client=http)
    loop = asyncio.get_running_loop()

    async def timed() -> float:
        start = loop.time()
        await feed.revoked("some-session")
        return loop.time() - start

    times = sorted(await asyncio.gather(*(timed() for _ in range(20))))
    assert times[-2] < 0.5, times
    assert feed.available


async def test_a_poll_that_does_not_end_is_cut_off_and_marks_the_feed_unavailable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(revocation_feed, "DEADLINE", 0.3)
    http = httpx.AsyncClient(transport=_SlowFeed(60))
    feed = revocation_feed.RevocationFeed("https://id.example", ("api", "x"), http_client=http)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with caplog.at_level(logging.WARNING, logger="identity.verifier"):
        assert not await feed.revoked("some-session")
    assert loop.time() - start < 1.5
    assert not feed.available
    assert "revocation feed unavailable" in caplog.text


async def test_an_oversized_page_is_not_read_whole() -> None:
    now = [1_000_000.0]
    served: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"revoked": ['
        while True:
            served.append(1)
            yield b'{"sid": "s1", "exp": 1000900}, ' * 1000

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    follower = _follower(handle, now)
    assert not await follower.revoked("s1")
    assert not follower.available
    assert len(served) * 30_000 < 2 * MAX_BODY
