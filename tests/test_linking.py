"""Linking by address (docs/accounts.md, rule 2): who may join a user through their address alone.

An authoritative provider's sign-in joins the user holding its address verified only when that
user has no account of the same provider (a second account key there is a recycled domain or a
recreated account) and a provider, not our mailed link, proved the address (a confirmation can
be phished). Otherwise 409 `account_conflict` and nothing but the refusal's audit event is
written; explicit linking (`POST /users/me/accounts`) stays the way to join them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy import bindparam, text
from sqlalchemy.engine import make_url

from identity.accounts.audit import Context
from identity.accounts.sign_in import CALL as sign_in_call
from identity.accounts.sign_in import SignInRequest
from identity.clock import utc
from identity.settings import Settings
from identity.store.database import alembic_config
from identity.store.models import DEFAULT_SCOPE, UTCDateTime, new_id
from identity.tokens.id_tokens import VerifiedIdentity

from .fakes import FakeClock, Issuers
from .smtp import Inbox
from .support import Sql, bearer, exchange, mail_link, running, sign_in

pytestmark = pytest.mark.anyio
CONFLICT = {
    "error": "account_conflict",
    "error_description": "an account with this email exists; sign in with it, then link this one",
}
CEO: dict[str, Any] = {"email": "ceo@startup.example", "hd": "startup.example"}


def detail(event: dict[str, Any]) -> dict[str, Any]:
    value = event["detail"]
    return json.loads(value) if isinstance(value, str) else dict(value)


async def verified_by(sql: Sql, user_id: str) -> str | None:
    value: str | None = await sql.scalar(
        "SELECT email_verified_by FROM users WHERE id = :id", id=user_id
    )
    return value


async def refused_with_nothing_written(
    client: httpx.AsyncClient, sql: Sql, token: str, holder: str, reason: str, provider: str
) -> None:
    """409 on both exchange endpoints, the token not spent, one `sign_in_refused` event each."""
    before = await sql.counts()
    response = await exchange(client, token)
    assert response.status_code == 409
    assert response.json() == CONFLICT
    callback = await client.post(
        "/auth/oauth/callback", json={"provider": provider, "id_token": token}
    )
    assert callback.status_code == 409
    assert callback.json() == CONFLICT
    assert await sql.counts() == {**before, "audit_events": before["audit_events"] + 2}
    refusals = (await sql.events("sign_in_refused"))[-2:]
    assert [(e["user_id"], detail(e)) for e in refusals] == [
        (holder, {"provider": provider, "reason": reason})
    ] * 2


async def test_a_second_account_of_the_same_provider_is_never_linked_by_address(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    """Domain resurrection: whoever re-registers startup.example gets another Google `sub` for
    the same address; it must not sign in as the user of the first."""
    first = await sign_in(client, issuers.google, sub="S1", **CEO)
    ceo = first["user"]
    assert await verified_by(sql, ceo["id"]) == "google"
    token = issuers.google.mint(sub="S2", **CEO)
    await refused_with_nothing_written(client, sql, token, ceo["id"], "same_provider", "google")
    # Explicit linking, by the signed-in user, stays the way; then S2 finds that user.
    linked = await client.post(
        "/users/me/accounts", json={"id_token": token}, headers=bearer(first["access_token"])
    )
    assert linked.status_code == 200
    assert {a["provider_account_id"] for a in linked.json()["accounts"]} == {"S1", "S2"}
    again = await sign_in(client, issuers.google, sub="S2", **CEO)
    assert again["user"]["id"] == ceo["id"]


async def test_of_concurrent_new_accounts_of_one_provider_at_most_one_links(
    client: httpx.AsyncClient, issuers: Issuers, sql: Sql
) -> None:
    """Eight new Google accounts for the address of a user who has none yet, at once: one is
    linked, the others meet it. (Requests in one process rarely overlap inside the database:
    the next test holds one sign-in open to show the twin waits for it.)"""
    holder = (await sign_in(client, issuers.okta, email="ada@example.com"))["user"]
    tokens = [
        issuers.google.mint(sub=f"g-{n}", email="ada@example.com", hd="example.com")
        for n in range(8)
    ]
    responses = await asyncio.gather(*(exchange(client, t) for t in tokens))
    assert Counter(r.status_code for r in responses) == {200: 1, 409: 7}
    assert {r.json()["user"]["id"] for r in responses if r.status_code == 200} == {holder["id"]}
    providers = await sql.rows(
        "SELECT provider FROM accounts WHERE user_id = :id ORDER BY provider", id=holder["id"]
    )
    assert [p["provider"] for p in providers] == ["google", "okta"]
    assert await sql.scalar("SELECT count(*) FROM users") == 1
    reasons = Counter(detail(e)["reason"] for e in await sql.events("sign_in_refused"))
    assert reasons == {"same_provider": 7}


async def test_a_link_in_flight_holds_back_its_twin(
    client: httpx.AsyncClient, issuers: Issuers, clock: FakeClock, database_url: str
) -> None:
    """The twin above, step by step in PostgreSQL: one new Google account's sign-in has linked
    to the holder and not committed yet; the other waits for it (the holder's row is locked
    from the start), then sees that account and is refused."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite admits one writer at a time: there is no twin in flight")
    await sign_in(client, issuers.okta, email="ada@example.com")
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        in_flight = first.transaction()
        await in_flight.start()
        linked = await first.fetchrow(sign_in_call.query, *_google_sign_in(clock, "g-1"))
        assert linked is not None and linked["outcome"] == "ok"
        twin = asyncio.create_task(
            second.fetchrow(sign_in_call.query, *_google_sign_in(clock, "g-2"))
        )
        await asyncio.sleep(0.3)
        assert not twin.done()
        await in_flight.commit()
        refused = await twin
    finally:
        await first.close()
        await second.close()
    assert refused is not None
    assert (refused["outcome"], refused["reason"]) == ("conflict", "same_provider")


def _google_sign_in(clock: FakeClock, key: str) -> tuple[object, ...]:
    """identity_sign_in's arguments for a first sign-in of Google account `key` (Workspace
    example.com, so authoritative for ada@example.com)."""
    now = clock()
    identity = VerifiedIdentity(
        provider="google",
        account_key=key,
        email="ada@example.com",
        email_verified=True,
        authoritative=True,
        name=None,
        picture=None,
        expires_at=int(now) + 600,
        replay_key=f"replay-{key}",
        replay_expires=utc(now + 960),
    )
    request = SignInRequest(
        identity=identity,
        client_id="public",
        scope=DEFAULT_SCOPE,
        audience=None,
        session_id=new_id(),
        refresh_hash=f"refresh-{key}",
        session_expires=utc(now + 3600),
        user_agent=None,
        now=utc(now),
        context=Context(),
    )
    return sign_in_call.values(request)


async def test_an_address_proven_only_by_our_mail_never_earns_a_link(
    mail_client: httpx.AsyncClient, issuers: Issuers, inbox: Inbox, sql: Sql
) -> None:
    """Confirmation phishing: an attacker's own Entra tenant claims victim@gmail.com (stored
    unverified), asks for a verification mail, the victim clicks Confirm. The victim's first
    Google sign-in must not join the attacker's user."""
    attacker = await sign_in(mail_client, issuers.microsoft, email="victim@gmail.com")
    assert attacker["user"]["email_verified"] is None
    auth = bearer(attacker["access_token"])
    assert (await mail_client.post("/auth/verify-email/request", headers=auth)).status_code == 202
    _, address, mail_token = mail_link(inbox.messages[-1])
    confirmed = await mail_client.post(
        "/auth/verify-email", json={"email": address, "token": mail_token}
    )
    assert confirmed.status_code == 200
    assert confirmed.json()["email_verified"] is not None
    assert await verified_by(sql, attacker["user"]["id"]) == "mail"

    victim = issuers.google.mint(sub="victim", email="victim@gmail.com")
    await refused_with_nothing_written(
        mail_client, sql, victim, attacker["user"]["id"], "not_proven_by_provider", "google"
    )
    accounts = await sql.rows("SELECT provider FROM accounts")
    assert [a["provider"] for a in accounts] == ["microsoft"]


async def test_who_proved_the_address_is_recorded_by_every_path(
    mail_client: httpx.AsyncClient, issuers: Issuers, inbox: Inbox, sql: Sql
) -> None:
    google, okta = issuers.google, issuers.okta
    # Rule 3: a provider's unverified claim records nobody; an authoritative one takes it.
    squatter = (await sign_in(mail_client, issuers.microsoft, email="grace@gmail.com"))["user"]
    assert await verified_by(sql, squatter["id"]) is None
    owner = (await sign_in(mail_client, google, sub="grace", email="grace@gmail.com"))["user"]
    assert await verified_by(sql, owner["id"]) == "google"
    # Rule 1: an address the provider moves its user to.
    await sign_in(mail_client, google, sub="grace", email="grace.h@gmail.com")
    assert await verified_by(sql, owner["id"]) == "google"

    # Rule 4 without authority: a Google account for a non-Workspace address is unverified;
    # our mail proves it ("mail"), which does not let Okta link by address ...
    first = await sign_in(mail_client, google, sub="ada", email="ada@example.com")
    ada = first["user"]["id"]
    assert await verified_by(sql, ada) is None
    auth = bearer(first["access_token"])
    assert (await mail_client.post("/auth/verify-email/request", headers=auth)).status_code == 202
    _, address, mail_token = mail_link(inbox.messages[-1])
    await mail_client.post("/auth/verify-email", json={"email": address, "token": mail_token})
    assert await verified_by(sql, ada) == "mail"
    okta_token = okta.mint(email="ada@example.com")
    assert (await exchange(mail_client, okta_token)).status_code == 409
    # ... until a provider authoritative for it proves it on one of the user's own accounts
    # (rule 1: the same Google account, now of the Workspace example.com).
    await sign_in(mail_client, google, sub="ada", email="ada@example.com", hd="example.com")
    assert await verified_by(sql, ada) == "google"
    linked = await exchange(mail_client, okta_token)
    assert linked.status_code == 200
    assert linked.json()["user"]["id"] == ada


async def test_addresses_verified_before_0006_are_unknown_and_link_nothing(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql, database_url: str
) -> None:
    """0006 records nobody for existing verified addresses: unknown is treated like our mail.
    The user's next sign-in through a provider authoritative for the address records it."""
    config = alembic_config(database_url)
    # Alembic runs its own event loop: in a thread, beside this test's.
    await asyncio.to_thread(command.downgrade, config, "0005")
    now = datetime.fromtimestamp(clock(), UTC)
    when = {"now": now}
    insert_user = text(
        "INSERT INTO users (id, name, email, email_verified, name_edited, image_edited, "
        "email_edited, created_at, updated_at) VALUES ('old-user', 'Ada', 'ada@example.com', "
        ":now, false, false, false, :now, :now)"
    ).bindparams(bindparam("now", type_=UTCDateTime()))
    insert_account = text(
        "INSERT INTO accounts (id, user_id, type, provider, provider_account_id, created_at, "
        "updated_at) VALUES ('old-account', 'old-user', 'oidc', 'google', 'legacy', :now, :now)"
    ).bindparams(bindparam("now", type_=UTCDateTime()))
    async with sql.engine.begin() as connection:
        await connection.execute(insert_user, when)
        await connection.execute(insert_account, when)
    await sql.engine.dispose()  # no pooled connection remembers the old schema
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await verified_by(sql, "old-user") is None

    async with running(settings, issuers, clock) as (_, client):
        okta_token = issuers.okta.mint(email="ada@example.com")
        await refused_with_nothing_written(
            client, sql, okta_token, "old-user", "not_proven_by_provider", "okta"
        )
        google = issuers.google.mint(sub="legacy", email="ada@example.com", hd="example.com")
        assert (await exchange(client, google)).json()["user"]["id"] == "old-user"
        assert await verified_by(sql, "old-user") == "google"
        assert (await exchange(client, okta_token)).json()["user"]["id"] == "old-user"
