"""Apple token revocation (docs/signals.md): a deleted user's, or an unlinked Apple account's,
stored refresh token is revoked at Apple with an ES256 client secret, after the commit and never
inside the request, retried while Apple fails."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from identity.app import create_app
from identity.environment import ConfigError
from identity.settings import Settings
from identity.tokens import apple_revocation

from .fakes import APPLE_APP, APPLE_WEB, FakeClock, Issuers
from .security_events import (
    APPLE_KEY_ID,
    APPLE_REVOKE,
    APPLE_TEAM,
    FakeAppleRevoke,
    apple_notification,
)
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


@pytest.fixture
async def client(
    apple_settings: Settings, issuers: Issuers, clock: FakeClock, apple_revoke: FakeAppleRevoke
) -> AsyncIterator[httpx.AsyncClient]:
    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == APPLE_REVOKE:
            return apple_revoke.handle(request)
        return issuers.handler(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        app = create_app(apple_settings, http_client=http, clock=clock)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
                yield client


async def callback(client: httpx.AsyncClient, issuers: Issuers, **claims: Any) -> dict[str, Any]:
    response = await client.post(
        "/auth/oauth/callback",
        json={
            "provider": "apple",
            "id_token": issuers.apple.mint(**claims),
            "refresh_token": "apple-refresh-1",
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def revoked(fake: FakeAppleRevoke, count: int = 1) -> None:
    for _ in range(200):
        if len(fake.revoked) >= count:
            return
        await asyncio.sleep(0.01)


async def test_deleting_the_user_revokes_the_stored_apple_token(
    client: httpx.AsyncClient, issuers: Issuers, apple_revoke: FakeAppleRevoke, sql: Sql
) -> None:
    user = await callback(client, issuers, aud=APPLE_APP)
    stored = await sql.scalar("SELECT refresh_token FROM accounts")
    assert stored and "apple-refresh-1" not in stored  # sealed
    response = await client.delete("/users/me", headers=bearer(user["access_token"]))
    assert response.status_code == 204
    await revoked(apple_revoke)
    # The client the token was issued to (its id_token's aud), the client secret accepted.
    assert apple_revoke.revoked == [(APPLE_APP, "apple-refresh-1")]
    assert apple_revoke.refused == []


async def test_unlinking_apple_revokes_its_token_and_another_provider_does_not(
    client: httpx.AsyncClient, issuers: Issuers, apple_revoke: FakeAppleRevoke
) -> None:
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
    await revoked(apple_revoke)
    assert apple_revoke.revoked == [(APPLE_WEB, "apple-refresh-1")]


async def test_apple_account_delete_event_revokes_the_token(
    client: httpx.AsyncClient, issuers: Issuers, apple_revoke: FakeAppleRevoke, sql: Sql
) -> None:
    await callback(client, issuers)
    response = await client.post(
        "/signals/apple", json={"payload": apple_notification(issuers.apple, "account-delete")}
    )
    assert response.status_code == 200
    await revoked(apple_revoke)
    assert apple_revoke.revoked == [(APPLE_WEB, "apple-refresh-1")]
    assert await sql.scalar("SELECT count(*) FROM users") == 0


async def test_a_revocation_is_retried_while_apple_fails(
    apple_settings: Settings, team_key: ec.EllipticCurvePrivateKey
) -> None:
    fake = FakeAppleRevoke(team_key.public_key(), failures=2)
    from identity.tokens.provider_tokens import Sealer

    sealer = Sealer(apple_settings.token_encryption_keys)
    transport = httpx.MockTransport(fake.handle)
    async with httpx.AsyncClient(transport=transport) as http:
        revoker = apple_revocation.from_settings(
            apple_settings, http, sealer, delays=(0.01, 0.01, 0.01)
        )
        assert revoker is not None
        sealed = sealer.seal("apple-refresh-2")
        assert sealed is not None
        revoker.submit([apple_revocation.StoredAppleToken(sealed)])
        await revoker.drain()
    assert fake.calls == 3
    assert fake.revoked == [(APPLE_WEB, "apple-refresh-2")]


async def test_a_wrong_key_is_refused_by_apple_and_not_retried(
    apple_settings: Settings,
) -> None:
    fake = FakeAppleRevoke(ec.generate_private_key(ec.SECP256R1()).public_key())
    from identity.tokens.provider_tokens import Sealer

    sealer = Sealer(apple_settings.token_encryption_keys)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as http:
        revoker = apple_revocation.from_settings(apple_settings, http, sealer, delays=(0.01,))
        assert revoker is not None
        sealed = sealer.seal("apple-refresh-3")
        assert sealed is not None
        revoker.submit([apple_revocation.StoredAppleToken(sealed)])
        await revoker.drain()
    assert fake.calls == 1 and fake.revoked == [] and fake.refused == ["InvalidSignatureError"]


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
