"""The audit log: an event exists exactly when its change does, and never holds a secret."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter

import httpx
import pytest

from identity.settings import Settings

from .fakes import FakeClock, FakeIssuer, Issuers
from .smtp import Inbox
from .support import Sql, basic, bearer, exchange, mail_link, refresh, running, sign_in

pytestmark = pytest.mark.anyio
SECRETS = {"nextjs": "nextjs-secret-0123456789", "ops": "ops-secret-0123456789abc"}


async def test_thirty_concurrent_first_sign_ins_give_thirty_sign_in_events(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    tokens = [google.mint() for _ in range(30)]  # one new person, thirty tokens at once
    responses = await asyncio.gather(*(exchange(client, t) for t in tokens))
    assert Counter(r.status_code for r in responses) == {200: 30}
    events = await sql.events("sign_in")
    assert len(events) == 30
    assert await sql.scalar("SELECT count(*) FROM users") == 1
    created = [
        json.loads(e["detail"]) if isinstance(e["detail"], str) else e["detail"] for e in events
    ]
    assert sum(d["created_user"] for d in created) == 1


async def test_a_failure_in_the_middle_leaves_neither_change_nor_event(
    settings: Settings, issuers: Issuers, clock: FakeClock, smtp: tuple[Inbox, str], sql: Sql
) -> None:
    """The mail fails after the change was written in its transaction: both roll back."""
    configured = dataclasses.replace(settings, smtp_url=smtp[1])
    async with running(configured, issuers, clock) as (_, client):
        auth = bearer((await sign_in(client, issuers.google))["access_token"])
        before = await sql.counts()
        smtp[0].refuse = True
        response = await client.patch("/users/me", json={"email": "new@example.com"}, headers=auth)
        assert response.status_code == 503
        after = await sql.counts()
        # The mail budget's charge stands (taken first, docs/security.md); nothing else.
        assert after.pop("rate_limits") == 2
        before.pop("rate_limits")
        assert after == before
        assert await sql.events("email_change_requested") == []
        assert await sql.events("email_verification_sent") == []


async def test_a_refused_sign_in_writes_its_event_and_nothing_else(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    await sign_in(client, google)
    before = await sql.counts()
    assert (await exchange(client, google.mint(sub="x", email_verified=False))).status_code == 409
    after = await sql.counts()
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {"audit_events": 1}


async def test_the_event_carries_the_request_side(
    client: httpx.AsyncClient, google: FakeIssuer, sql: Sql
) -> None:
    response = await exchange(
        client, google.mint(), headers={"User-Agent": "Tab/1", "X-Request-ID": "req-42"}
    )
    (event,) = await sql.events("sign_in")
    assert (event["client_id"], event["user_agent"], event["request_id"]) == (
        "public",
        "Tab/1",
        "req-42",
    )
    assert event["ip"] == "127.0.0.1"
    assert event["session_id"] is not None and event["user_id"] == response.json()["user"]["id"]


async def test_no_secret_of_the_whole_flow_reaches_the_log_of_events(
    settings: Settings, issuers: Issuers, clock: FakeClock, smtp: tuple[Inbox, str], sql: Sql
) -> None:
    """Every raw secret this test hands the service: none may appear in audit_events."""
    configured = dataclasses.replace(
        settings,
        clients=SECRETS,
        admin_clients=("ops",),
        smtp_url=smtp[1],
        refresh_reuse_interval=1,
    )
    secrets: list[str] = list(SECRETS.values())
    nextjs, ops = basic("nextjs", SECRETS["nextjs"]), basic("ops", SECRETS["ops"])
    async with running(configured, issuers, clock) as (_, client):
        id_token = issuers.google.mint(nonce="the-nonce")
        body = (await exchange(client, id_token, nonce="the-nonce", headers=nextjs)).json()
        secrets += [id_token, body["access_token"], body["refresh_token"], "the-nonce"]
        callback_token = issuers.microsoft.mint()
        provider = {
            "provider": "microsoft",
            "id_token": callback_token,
            "access_token": "eyJ.ms-access",
            "refresh_token": "M.R3_refresh",
        }
        assert (
            await client.post("/auth/oauth/callback", json=provider, headers=nextjs)
        ).status_code == 200
        secrets += [callback_token, "eyJ.ms-access", "M.R3_refresh"]
        refreshed = (await refresh(client, body["refresh_token"], headers=nextjs)).json()
        secrets += [refreshed["refresh_token"], refreshed["access_token"]]
        await sql.set_time("sessions", "rotated_at")  # the interval has ended
        await refresh(client, body["refresh_token"], headers=nextjs)  # reuse: revokes
        auth = bearer(
            (await exchange(client, issuers.google.mint(), headers=nextjs)).json()["access_token"]
        )
        await client.patch(
            "/users/me", json={"email": "ada.new@example.com", "name": "Ada K"}, headers=auth
        )
        _, _, mail_token = mail_link(smtp[0].messages[-1])
        secrets.append(mail_token)
        await client.post(
            "/auth/verify-email", json={"email": "ada.new@example.com", "token": mail_token}
        )
        link = issuers.apple.mint()
        secrets.append(link)
        await client.post("/users/me/accounts", json={"id_token": link}, headers=auth)
        await client.post("/auth/logout", headers=auth)
        other = (await exchange(client, issuers.google.mint(), headers=nextjs)).json()
        await client.post("/revoke", data={"token": other["refresh_token"]}, headers=nextjs)
        uid = body["user"]["id"]
        await client.patch(f"/admin/users/{uid}", json={"disabled": True}, headers=ops)
        await client.patch(f"/admin/users/{uid}", json={"disabled": False}, headers=ops)
        await client.delete(f"/admin/users/{uid}/sessions", headers=ops)
    rows = await sql.rows("SELECT * FROM audit_events")
    assert {r["type"] for r in rows} == {
        "sign_in",
        "refresh_reuse",
        "user_updated",
        "email_change_requested",
        "email_verification_sent",
        "email_verified",
        "account_linked",
        "logout",
        "session_revoked",
        "user_disabled",
        "user_enabled",
        "sessions_revoked",
    }
    dump = json.dumps(rows, default=str)
    for secret in secrets:
        for piece in {secret, *secret.split(".")}:
            if len(piece) >= 8:
                assert piece not in dump, f"a secret reached the audit log: {piece[:12]}…"


async def test_old_events_are_pruned_after_the_retention(
    client: httpx.AsyncClient, google: FakeIssuer, clock: FakeClock, sql: Sql, database_url: str
) -> None:
    from identity.accounts.services import data_services
    from identity.store.database import Database

    await sign_in(client, google)
    database = Database(database_url)
    try:
        settings = Settings(database_url=database_url, audit_retention=3600)
        janitor = data_services(settings, database, clock=clock).janitor
        assert (await janitor.prune())["audit_events"] == 0
        # Past the retention by the database's clock on PostgreSQL, the fake one on SQLite.
        await sql.set_time("audit_events", "created_at")
        assert (await janitor.prune())["audit_events"] == 1
    finally:
        await database.close()
    assert await sql.scalar("SELECT count(*) FROM audit_events") == 0


def test_docs_name_every_audit_event_type() -> None:
    from pathlib import Path

    from identity.accounts.audit import TYPES

    page = (Path(__file__).resolve().parent.parent / "docs" / "admin.md").read_text()
    assert {t for t in TYPES if f"| `{t}` |" not in page} == set()
