"""Apple token revocation (docs/signals.md): a deleted user's, or an unlinked Apple account's,
stored refresh token is revoked at Apple with an ES256 client secret. The revocation is an
outbox notice written in the transaction of the delete or unlink (its token sealed), delivered
by the worker of any replica: after a restart, after Apple's failures, once across replicas,
and never when the change rolled back."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette

from identity.accounts import audit, outbox
from identity.accounts.users import delete_user
from identity.app import create_app
from identity.clock import utc
from identity.destinations import EVENTS, WebhookEndpoint
from identity.environment import ConfigError
from identity.settings import Settings
from identity.store.database import Database
from identity.tokens import apple_revocation
from identity.tokens.provider_tokens import Sealer

from .fakes import APPLE_APP, APPLE_WEB, FakeClock, Issuers
from .security_events import (
    APPLE_KEY_ID,
    APPLE_REVOKE,
    APPLE_TEAM,
    FakeAppleRevoke,
    apple_notification,
)
from .servers import base_env, run_cli
from .support import ISSUER, Sql, bearer, sign_in

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def team_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def key_file(tmp_path: Path, team_key: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "AuthKey.p8"
    path.write_bytes(
        team_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture
def apple_settings(settings: Settings, key_file: Path) -> Settings:
    return dataclasses.replace(
        settings,
        apple_team_id=APPLE_TEAM,
        apple_key_id=APPLE_KEY_ID,
        apple_private_key_file=key_file,
        token_encryption_keys=(Fernet.generate_key().decode(),),
    )


@pytest.fixture
def apple_revoke(team_key: ec.EllipticCurvePrivateKey, clock: FakeClock) -> FakeAppleRevoke:
    return FakeAppleRevoke(team_key.public_key(), clock=clock)


@asynccontextmanager
async def service(
    settings: Settings,
    issuers: Issuers,
    clock: FakeClock,
    apple: FakeAppleRevoke,
    *,
    delivery_interval: float = 3600,  # rounds are driven by the test unless asked
    seen: list[str] | None = None,
    name: str = "",
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """One instance of the service (a replica), Apple's /auth/revoke faked beside the issuers;
    `seen` collects the `name` of the instance that called Apple, once per call."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == APPLE_REVOKE:
            if seen is not None:
                seen.append(name)
            await asyncio.sleep(0.01)  # a call takes time: replicas' rounds overlap
            return apple.handle(request)
        return issuers.handler(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        app = create_app(
            settings, http_client=http, clock=clock, delivery_interval=delivery_interval
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
                yield app, client


@pytest.fixture
async def running_app(
    apple_settings: Settings, issuers: Issuers, clock: FakeClock, apple_revoke: FakeAppleRevoke
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    async with service(apple_settings, issuers, clock, apple_revoke) as pair:
        yield pair


@pytest.fixture
def client(running_app: tuple[Starlette, httpx.AsyncClient]) -> httpx.AsyncClient:
    return running_app[1]


async def deliver(app: Starlette) -> int:
    """One delivery round of this instance's worker: how many notices it claimed."""
    claimed: int = await app.state.deliveries.round()
    return claimed


async def callback(
    client: httpx.AsyncClient, issuers: Issuers, refresh: str = "apple-refresh-1", **claims: Any
) -> dict[str, Any]:
    """An Apple sign-in through the callback, which stores its refresh token (sealed)."""
    response = await client.post(
        "/auth/oauth/callback",
        json={
            "provider": "apple",
            "id_token": issuers.apple.mint(**claims),
            "refresh_token": refresh,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def revocations(sql: Sql) -> list[dict[str, Any]]:
    return await sql.rows(
        "SELECT event, destination, payload, state, attempts, sealed, audit_event_id FROM outbox "
        "WHERE event = :event ORDER BY id",
        event=outbox.APPLE_REVOKE,
    )


async def attempts(sql: Sql) -> list[tuple[str, int | None]]:
    rows = await sql.rows("SELECT outcome, status_code FROM deliveries ORDER BY id")
    return [(r["outcome"], r["status_code"]) for r in rows]


async def test_deleting_the_user_revokes_the_stored_apple_token(
    running_app: tuple[Starlette, httpx.AsyncClient],
    apple_settings: Settings,
    issuers: Issuers,
    apple_revoke: FakeAppleRevoke,
    sql: Sql,
) -> None:
    app, client = running_app
    user = await callback(client, issuers, aud=APPLE_APP)
    stored = await sql.scalar("SELECT refresh_token FROM accounts")
    assert stored and "apple-refresh-1" not in stored  # sealed
    response = await client.delete("/users/me", headers=bearer(user["access_token"]))
    assert response.status_code == 204
    # Written with the delete, not yet sent: never in the request.
    assert apple_revoke.calls == 0
    (row,) = await revocations(sql)
    assert row["destination"] == f"apple:{APPLE_APP}" and row["state"] == "pending"
    # The row holds the token sealed under IDENTITY_TOKEN_ENCRYPTION_KEY (the account's own
    # ciphertext), never in the clear; its payload only ids.
    sealer = Sealer(apple_settings.token_encryption_keys)
    assert sealer.open(row["sealed"]) == "apple-refresh-1"
    assert _json(row["payload"]) == {"user_id": user["user"]["id"]}
    (event,) = await sql.events("user_deleted")
    assert (await sql.scalar("SELECT audit_event_id FROM outbox")) == event["id"]
    assert await deliver(app) == 1
    # The client the token was issued to (its id_token's aud), the client secret accepted.
    assert apple_revoke.revoked == [(APPLE_APP, "apple-refresh-1")]
    assert apple_revoke.refused == []
    (row,) = await revocations(sql)
    assert (row["state"], row["sealed"]) == ("delivered", None)  # the token is forgotten
    # Nowhere in the outbox, its attempts or the audit log: not the token, not its ciphertext.
    everything = json.dumps(
        [
            await sql.rows("SELECT * FROM outbox"),
            await sql.rows("SELECT * FROM deliveries"),
            await sql.rows("SELECT * FROM audit_events"),
        ],
        default=str,
    )
    assert "apple-refresh-1" not in everything and stored not in everything


async def test_unlinking_apple_revokes_its_token_and_another_provider_does_not(
    running_app: tuple[Starlette, httpx.AsyncClient],
    issuers: Issuers,
    apple_revoke: FakeAppleRevoke,
    sql: Sql,
) -> None:
    app, client = running_app
    user = await sign_in(client, issuers.google)
    headers = bearer(user["access_token"])
    linked = await client.post(
        "/users/me/accounts", json={"id_token": issuers.apple.mint()}, headers=headers
    )
    assert linked.status_code == 200
    await callback(client, issuers)  # the Apple sign-in stores its refresh token
    sub = issuers.apple.claims()["sub"]
    response = await client.delete(f"/users/me/accounts/apple/{sub}", headers=headers)
    assert response.status_code == 204
    google_sub = issuers.google.claims()["sub"]
    relinked = await client.post(
        "/users/me/accounts", json={"id_token": issuers.apple.mint()}, headers=headers
    )
    assert relinked.status_code == 200
    response = await client.delete(f"/users/me/accounts/google/{google_sub}", headers=headers)
    assert response.status_code == 204
    (event,) = [e for e in await sql.events("account_unlinked") if "apple" in str(e["detail"])]
    (row,) = await revocations(sql)  # the Google unlink wrote none
    assert row["audit_event_id"] == event["id"]
    assert await deliver(app) == 1
    assert apple_revoke.revoked == [(APPLE_WEB, "apple-refresh-1")]


async def test_apple_account_delete_event_revokes_the_token(
    running_app: tuple[Starlette, httpx.AsyncClient],
    issuers: Issuers,
    apple_revoke: FakeAppleRevoke,
    sql: Sql,
) -> None:
    app, client = running_app
    await callback(client, issuers)
    response = await client.post(
        "/signals/apple", json={"payload": apple_notification(issuers.apple, "account-delete")}
    )
    assert response.status_code == 200
    assert await sql.scalar("SELECT count(*) FROM users") == 0
    assert len(await revocations(sql)) == 1  # the unlink's; the user's deletion found none left
    assert await deliver(app) == 1
    assert apple_revoke.revoked == [(APPLE_WEB, "apple-refresh-1")]


async def test_a_revocation_pending_when_the_service_stops_is_made_by_the_next_one(
    apple_settings: Settings,
    issuers: Issuers,
    clock: FakeClock,
    apple_revoke: FakeAppleRevoke,
    sql: Sql,
    tmp_path: Path,
) -> None:
    async with service(apple_settings, issuers, clock, apple_revoke) as (_, client):
        user = await callback(client, issuers)
        response = await client.delete("/users/me", headers=bearer(user["access_token"]))
        assert response.status_code == 204
    # Stopped before any delivery round: nothing was sent, the notice waits in the database.
    assert apple_revoke.calls == 0
    # `identity outbox list` shows it like any notice, without its token.
    env = base_env(
        IDENTITY_DATABASE_URL=apple_settings.database_url,
        IDENTITY_KEYS_DIR=str(apple_settings.keys_dir),
    )
    listed = run_cli("outbox", "list", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (notice,) = json.loads(listed.stdout)
    assert (notice["event"], notice["destination"], notice["state"]) == (
        outbox.APPLE_REVOKE,
        f"apple:{APPLE_WEB}",
        "pending",
    )
    sealed = await sql.scalar("SELECT sealed FROM outbox")
    assert "apple-refresh-1" not in listed.stdout and sealed not in listed.stdout
    # A new instance on the same database: its worker delivers it, by itself.
    async with service(apple_settings, issuers, clock, apple_revoke, delivery_interval=0.02):
        for _ in range(200):
            if await sql.scalar("SELECT state FROM outbox") == "delivered":
                break
            await asyncio.sleep(0.02)
    assert apple_revoke.revoked == [(APPLE_WEB, "apple-refresh-1")]
    assert await sql.scalar("SELECT state FROM outbox") == "delivered"


async def test_a_revocation_is_retried_while_apple_fails(
    apple_settings: Settings, issuers: Issuers, clock: FakeClock, team_key: Any, sql: Sql
) -> None:
    apple = FakeAppleRevoke(team_key.public_key(), failures=2, clock=clock)
    async with service(apple_settings, issuers, clock, apple) as (app, client):
        user = await callback(client, issuers, refresh="apple-refresh-2")
        await client.delete("/users/me", headers=bearer(user["access_token"]))
        assert await deliver(app) == 1
        assert await deliver(app) == 0  # not due yet: backing off
        await sql.set_time("outbox", "next_attempt_at")  # the backoff is over
        assert await deliver(app) == 1
        await sql.set_time("outbox", "next_attempt_at")
        assert await deliver(app) == 1
    assert apple.calls == 3
    assert apple.revoked == [(APPLE_WEB, "apple-refresh-2")]
    assert await attempts(sql) == [("failed", 503), ("failed", 503), ("delivered", 200)]


async def test_a_revocation_apple_never_accepts_is_dropped_after_a_day(
    apple_settings: Settings, issuers: Issuers, clock: FakeClock, team_key: Any, sql: Sql
) -> None:
    apple = FakeAppleRevoke(team_key.public_key(), failures=100, clock=clock)
    async with service(apple_settings, issuers, clock, apple) as (app, client):
        user = await callback(client, issuers)
        await client.delete("/users/me", headers=bearer(user["access_token"]))
        await sql.set_time("outbox", "created_at")
        await sql.set_time("outbox", "next_attempt_at")
        assert await deliver(app) == 1
    assert await attempts(sql) == [("dropped", 503)]
    (row,) = await revocations(sql)
    assert (row["state"], row["sealed"]) == ("dropped", None)
    (event,) = await sql.events("notice_dropped")
    detail = _json(event["detail"])
    assert (detail["notice"], detail["destination"]) == (outbox.APPLE_REVOKE, f"apple:{APPLE_WEB}")
    assert event["user_id"] == user["user"]["id"]


async def test_a_wrong_key_is_refused_by_apple_and_not_retried(
    apple_settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql
) -> None:
    apple = FakeAppleRevoke(ec.generate_private_key(ec.SECP256R1()).public_key(), clock=clock)
    async with service(apple_settings, issuers, clock, apple) as (app, client):
        user = await callback(client, issuers, refresh="apple-refresh-3")
        await client.delete("/users/me", headers=bearer(user["access_token"]))
        assert await deliver(app) == 1
        await sql.set_time("outbox", "next_attempt_at")
        assert await deliver(app) == 0
    assert apple.calls == 1 and apple.revoked == [] and apple.refused == ["InvalidSignatureError"]
    assert await attempts(sql) == [("dropped", 400)]
    assert len(await sql.events("notice_dropped")) == 1


async def test_a_rolled_back_delete_writes_no_revocation(
    running_app: tuple[Starlette, httpx.AsyncClient],
    apple_settings: Settings,
    issuers: Issuers,
    clock: FakeClock,
    sql: Sql,
) -> None:
    _, client = running_app
    user_id = (await callback(client, issuers))["user"]["id"]
    sealer = Sealer(apple_settings.token_encryption_keys)
    notices = outbox.Notices(apple=apple_revocation.clients(apple_settings, sealer))
    database = Database(apple_settings.database_url)

    async def failing_delete() -> None:
        async with database.transaction() as tx:
            await delete_user(tx, notices, user_id, at=utc(clock()), context=audit.Context())
            written = await tx.fetchone("SELECT count(*) AS n FROM outbox")
            assert written["n"] == 1  # written in the delete's own transaction …
            raise RuntimeError("the request failed after the delete")

    try:
        with pytest.raises(RuntimeError, match="after the delete"):
            await failing_delete()
    finally:
        await database.close()
    # … and gone with it: the user, its token, and no revocation.
    assert await sql.scalar("SELECT count(*) FROM outbox") == 0
    assert await sql.scalar("SELECT count(*) FROM users") == 1
    assert await sql.scalar("SELECT count(*) FROM accounts WHERE refresh_token IS NOT NULL") == 1


async def test_the_revocation_is_not_a_webhook_event_nor_in_the_revocation_feed(
    apple_settings: Settings,
    issuers: Issuers,
    clock: FakeClock,
    apple_revoke: FakeAppleRevoke,
    sql: Sql,
) -> None:
    assert outbox.APPLE_REVOKE not in EVENTS  # no webhooks file can subscribe to it
    hook = WebhookEndpoint("https://hooks.example/identity", b"k" * 32, frozenset(EVENTS))
    told = dataclasses.replace(apple_settings, webhooks=(hook,))
    async with service(told, issuers, clock, apple_revoke) as (_, client):
        user = await callback(client, issuers)
        await client.delete("/users/me", headers=bearer(user["access_token"]))
    rows = await sql.rows("SELECT event, destination FROM outbox ORDER BY id")
    webhook = sorted(r["event"] for r in rows if r["destination"].startswith("webhook:"))
    assert webhook == ["session.ended", "user.created", "user.deleted"]
    apple = [r["destination"] for r in rows if r["event"] == outbox.APPLE_REVOKE]
    assert apple == [f"apple:{APPLE_WEB}"]
    feed = await sql.rows("SELECT session_id FROM revocations")
    assert len(feed) == 1  # the ended session's, nothing of Apple's


async def test_without_apple_revocation_configured_nothing_is_written(
    settings: Settings, issuers: Issuers, clock: FakeClock, apple_revoke: FakeAppleRevoke, sql: Sql
) -> None:
    # Tokens stored, but no team key: as before, nothing is revoked at Apple.
    stored = dataclasses.replace(settings, token_encryption_keys=(Fernet.generate_key().decode(),))
    async with service(stored, issuers, clock, apple_revoke, delivery_interval=0.02) as (_, c):
        user = await callback(c, issuers)
        await c.delete("/users/me", headers=bearer(user["access_token"]))
        await asyncio.sleep(0.1)
    assert await sql.scalar("SELECT count(*) FROM outbox") == 0
    assert apple_revoke.calls == 0


async def test_two_replicas_on_one_postgresql_revoke_each_token_once(
    apple_settings: Settings,
    issuers: Issuers,
    clock: FakeClock,
    apple_revoke: FakeAppleRevoke,
    sql: Sql,
    database_url: str,
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one process: nothing to race")
    count = 30
    async with service(apple_settings, issuers, clock, apple_revoke) as (_, client):
        for n in range(count):
            user = await callback(
                client,
                issuers,
                refresh=f"apple-refresh-{n}",
                sub=f"0001.{n:032x}.0001",
                email=f"r{n}@privaterelay.appleid.com",
            )
            deleted = await client.delete("/users/me", headers=bearer(user["access_token"]))
            assert deleted.status_code == 204
    assert len(await revocations(sql)) == count
    seen: list[str] = []
    # Two instances, each its own pool and its own worker running by itself, as two replicas.
    async with (
        service(
            apple_settings,
            issuers,
            clock,
            apple_revoke,
            delivery_interval=0.01,
            seen=seen,
            name="a",
        ),
        service(
            apple_settings,
            issuers,
            clock,
            apple_revoke,
            delivery_interval=0.01,
            seen=seen,
            name="b",
        ),
    ):
        for _ in range(500):
            done = "SELECT count(*) FROM outbox WHERE state = 'delivered'"
            if await sql.scalar(done) >= count:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # time for a second, wrong, delivery to show
    tokens = [token for _, token in apple_revoke.revoked]
    assert sorted(tokens) == sorted(f"apple-refresh-{n}" for n in range(count))  # each once
    assert len(seen) == count and set(seen) == {"a", "b"}  # both took part
    assert await sql.scalar("SELECT count(*) FROM deliveries") == count
    assert await sql.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") == count


def _json(value: Any) -> Any:
    return value if isinstance(value, dict) else json.loads(value)


def test_a_key_file_that_is_not_a_p256_key_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "AuthKey.p8"
    path.write_text("not a key")
    with pytest.raises(ConfigError, match="IDENTITY_APPLE_PRIVATE_KEY_FILE"):
        apple_revocation.load_key(path)
    with pytest.raises(ConfigError, match="IDENTITY_APPLE_PRIVATE_KEY_FILE"):
        apple_revocation.load_key(tmp_path / "missing.p8")


def test_the_three_apple_variables_go_together() -> None:
    with pytest.raises(ConfigError, match="IDENTITY_APPLE_TEAM_ID"):
        Settings.from_env({"IDENTITY_APPLE_TEAM_ID": APPLE_TEAM})
