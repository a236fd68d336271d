"""The failure limit as an attacker meets it: no oracle past the limit, no lockout of others.

Past the limit an IP gets 429 on every client-authenticated endpoint and the admin API whatever
its credentials, the right secret's too; Bearer endpoints count per verified user, so one
user's mistakes never stop another's logout behind the same web server.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from identity.accounts.limits import FailureGuard
from identity.settings import RateLimit, Settings

from .fakes import FakeClock, FakeIssuer, Issuers
from .support import ISSUER, Sql, basic, bearer, exchange, running, sign_in

pytestmark = pytest.mark.anyio
SECRETS = {
    "nextjs": "nextjs-secret-0123456789",
    "backoffice": "backoffice-secret-0123456789",
}
NEXTJS = basic("nextjs", SECRETS["nextjs"])
ADMIN = basic("backoffice", SECRETS["backoffice"])


@pytest.fixture
async def with_clients(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> AsyncIterator[Starlette]:
    configured = dataclasses.replace(
        settings,
        clients=SECRETS,
        admin_clients=("backoffice",),
        rate_limit_failures=RateLimit(5, 60),
    )
    async with running(configured, issuers, clock) as (app, _):
        yield app


@pytest.fixture
async def limited(
    settings: Settings, issuers: Issuers, clock: FakeClock
) -> AsyncIterator[Starlette]:
    configured = dataclasses.replace(settings, rate_limit_failures=RateLimit(5, 60))
    async with running(configured, issuers, clock) as (app, _):
        yield app


def client_from(app: Starlette, ip: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 40000)), base_url=ISSUER
    )


async def test_past_the_limit_the_right_client_secret_gets_429_too(
    with_clients: Starlette, google: FakeIssuer, clock: FakeClock
) -> None:
    async with (
        client_from(with_clients, "203.0.113.9") as guesser,
        client_from(with_clients, "10.0.0.5") as server,
    ):
        wrong = basic("nextjs", "wrong-guess-0000000000")
        for _ in range(5):
            assert (await exchange(guesser, google.mint(), headers=wrong)).status_code == 401
        # The right secret from that IP: the same 429 as a wrong one, on every such endpoint.
        right = await exchange(guesser, google.mint(), headers=NEXTJS)
        assert right.status_code == 429
        assert right.json()["error"] == "rate_limited"
        for path in ("/revoke", "/introspect"):
            answer = await guesser.post(path, data={"token": "x"}, headers=NEXTJS)
            assert answer.status_code == 429, path
        assert (await guesser.get("/admin/users", headers=ADMIN)).status_code == 429
        # Another IP with the right secret is served as always.
        assert (await exchange(server, google.mint(), headers=NEXTJS)).status_code == 200
        clock.advance(60)
        assert (await exchange(guesser, google.mint(), headers=NEXTJS)).status_code == 200


async def test_a_second_replica_refuses_the_right_secret_too(
    settings: Settings, issuers: Issuers, clock: FakeClock, google: FakeIssuer
) -> None:
    """The count is the database's: failures on one replica lock the IP on the other."""
    configured = dataclasses.replace(
        settings,
        clients=SECRETS,
        admin_clients=("backoffice",),
        rate_limit_failures=RateLimit(5, 60),
    )
    async with (
        running(configured, issuers, clock) as (first, _),
        running(configured, issuers, clock) as (second, _),
    ):
        async with client_from(first, "203.0.113.11") as guesser:
            wrong = basic("nextjs", "wrong-guess-0000000000")
            for _ in range(5):
                assert (await exchange(guesser, google.mint(), headers=wrong)).status_code == 401
        async with client_from(second, "203.0.113.11") as guesser:
            assert (await exchange(guesser, google.mint(), headers=NEXTJS)).status_code == 429
            assert (await guesser.get("/admin/users", headers=ADMIN)).status_code == 429


async def test_the_admin_api_counts_failed_authentications(
    with_clients: Starlette, sql: Sql
) -> None:
    async with (
        client_from(with_clients, "203.0.113.10") as guesser,
        client_from(with_clients, "10.0.0.6") as ops,
    ):
        statuses = [
            (
                await guesser.get(
                    "/admin/users", headers=basic("backoffice", f"wrong-password-{i:012}")
                )
            ).status_code
            for i in range(20)
        ]
        assert statuses == [401] * 5 + [429] * 15
        # The right password from that IP: 429 as well, before it is compared.
        assert (await guesser.get("/admin/users", headers=ADMIN)).status_code == 429
        # A client that is not an admin counts too (403), per IP.
        refused = [(await ops.get("/admin/users", headers=NEXTJS)).status_code for _ in range(6)]
        assert refused == [403] * 5 + [429]
    async with client_from(with_clients, "10.0.0.7") as admin:
        # An authenticated admin's own mistakes (unknown ids) are not guesses: never a 429.
        misses = [
            (await admin.get("/admin/users/no-such-user", headers=ADMIN)).status_code
            for _ in range(8)
        ]
        assert misses == [404] * 8
    keys = {r["key"] for r in await sql.rows("SELECT key FROM rate_limits")}
    assert keys == {"fail:ip:203.0.113.10", "fail:ip:10.0.0.6"}


async def test_one_users_mistakes_never_stop_anothers_logout(
    limited: Starlette, issuers: Issuers
) -> None:
    """Everyone comes from the web server: a Bearer request counts per verified user."""
    async with client_from(limited, "10.0.0.5") as server:
        ada = await sign_in(server, issuers.google)
        grace = await sign_in(server, issuers.microsoft)
        pressed = [
            (
                await server.post("/auth/verify-email/request", headers=bearer(ada["access_token"]))
            ).status_code
            for _ in range(7)
        ]
        assert pressed[5:] == [429, 429]
        assert all(400 <= s < 500 and s != 429 for s in pressed[:5])
        # Ada's own later requests are refused while her window lasts...
        assert (
            await server.get("/users/me", headers=bearer(ada["access_token"]))
        ).status_code == 429
        # ... Grace's logout, from the same IP, is not.
        logout = await server.post("/auth/logout", headers=bearer(grace["access_token"]))
        assert logout.status_code == 204
        # Nor are the web server's sign-ins: Ada's count is not the IP's.
        assert (await exchange(server, issuers.apple.mint())).status_code == 200


async def test_invalid_bearer_tokens_count_per_ip_apart_from_sign_ins(
    limited: Starlette, issuers: Issuers
) -> None:
    async with client_from(limited, "10.0.0.8") as server:
        grace = await sign_in(server, issuers.microsoft)
        statuses = [
            (await server.get("/users/me", headers=bearer("not.a.token"))).status_code
            for _ in range(7)
        ]
        assert statuses == [401] * 5 + [429] * 2
        assert (await server.get("/users/me")).status_code == 429  # no token at all
        # A verified user from that IP is counted as themself, and sign-ins as the IP's own.
        me = await server.get("/users/me", headers=bearer(grace["access_token"]))
        assert me.status_code == 200
        assert (await exchange(server, issuers.apple.mint())).status_code == 200


async def test_linking_is_guarded(limited: Starlette, issuers: Issuers) -> None:
    async with client_from(limited, "10.0.0.9") as server:
        ada = await sign_in(server, issuers.google)
        statuses = [
            (
                await server.post(
                    "/users/me/accounts",
                    json={"id_token": f"bad-id-token-{i}"},
                    headers=bearer(ada["access_token"]),
                )
            ).status_code
            for i in range(70)
        ]
        assert statuses == [400] * 5 + [429] * 65


class HeldWrites:
    """Failures from one key prefix that stay in flight: judged and answered by nothing yet,
    their count written only when released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
        self.release = asyncio.Event()
        count = FailureGuard._count

        async def held(guard: FailureGuard, key: str) -> Any:
            if key.startswith(prefix):
                await self.release.wait()
            return await count(guard, key)

        monkeypatch.setattr(FailureGuard, "_count", held)


async def _settled(tasks: list[asyncio.Task[Any]]) -> None:
    """Give every request time to reach its held write (nothing else makes them wait)."""
    await asyncio.sleep(1.0)
    assert not any(t.done() for t in tasks), [t.result().status_code for t in tasks if t.done()]


async def test_a_burst_of_guesses_in_flight_locks_the_right_secret_out_too(
    with_clients: Starlette, google: FakeIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The concurrent twin: wrong guesses whose failures are still being written when the right
    secret is judged. Each guess passed the check at its start (nothing was counted yet); the
    right one must not be answered because the database has not caught up."""
    writes = HeldWrites(monkeypatch, "fail:ip:203.0.113.20")
    async with client_from(with_clients, "203.0.113.20") as guesser:
        wrong = basic("nextjs", "wrong-guess-0000000000")
        burst = [
            asyncio.create_task(exchange(guesser, google.mint(), headers=wrong)) for _ in range(8)
        ]
        admin_burst = [
            asyncio.create_task(
                guesser.get("/admin/users", headers=basic("backoffice", f"wrong-{i:016}"))
            )
            for i in range(3)
        ]
        await _settled(burst + admin_burst)
        right = await exchange(guesser, google.mint(), headers=NEXTJS)
        assert right.status_code == 429, right.text
        assert (await guesser.get("/admin/users", headers=ADMIN)).status_code == 429
        writes.release.set()
        statuses = sorted([(await t).status_code for t in burst + admin_burst])
    # Eleven failures for a limit of five: five answered as failures, the rest 429.
    assert statuses == [401] * 5 + [429] * 6


async def test_a_users_failures_in_flight_lock_their_next_request(
    limited: Starlette, issuers: Issuers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same twin for a Bearer user: failures still being written already count."""
    async with client_from(limited, "10.0.0.21") as server:
        ada = await sign_in(server, issuers.google)
        writes = HeldWrites(monkeypatch, "fail:")
        pressed = [
            asyncio.create_task(
                server.post(
                    "/users/me/accounts",
                    json={"id_token": f"bad-id-token-{i}"},
                    headers=bearer(ada["access_token"]),
                )
            )
            for i in range(6)
        ]
        await _settled(pressed)
        me = await server.get("/users/me", headers=bearer(ada["access_token"]))
        assert me.status_code == 429
        writes.release.set()
        statuses = sorted([(await t).status_code for t in pressed])
    assert statuses == [400] * 5 + [429]
