"""Signing keys in the database, sealed under IDENTITY_KEY_ENCRYPTION_KEY (docs/operations.md,
"Keys"): sealing, a wrong or rotated key-encryption key, tampered rows, automatic rotation by
one of several, and replicas picking a rotation up."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import timedelta
from typing import Any

import orjson
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from identity.settings import ConfigError, Settings
from identity.store.database import Database
from identity.tokens.signing_keys import DatabaseKeys, KeyFileError, KeyManager

from .fakes import FakeClock, Issuers
from .support import Sql, bearer, running, sign_in

pytestmark = pytest.mark.anyio
KEK, OTHER = Fernet.generate_key().decode(), Fernet.generate_key().decode()
LEAD, LIFETIME, INTERVAL = 1200.0, 960.0, 7200.0


@pytest.fixture
async def database(database_url: str) -> Any:
    db = Database(database_url, pool_mode="session")
    yield db
    await db.close()


def source(database: Database, *keks: str) -> DatabaseKeys:
    return DatabaseKeys(database, keks or (KEK,), lead=LEAD, token_lifetime=LIFETIME)


async def opened(keys: DatabaseKeys) -> tuple[list[str], list[str]]:
    await keys.fetch()
    usable, problems = keys.load_usable()
    return [k.kid for k in usable], [str(p) for p in problems]


async def age(sql: Sql, seconds: float) -> None:
    """Every key made `seconds` earlier: how a test moves past an interval measured by the
    database's clock, which nothing fakes."""
    for row in await sql.rows("SELECT kid, created_at, activates_at FROM signing_keys"):
        for column in ("created_at", "activates_at"):
            when = _aware(row[column]) - timedelta(seconds=seconds)
            await sql.set_time("signing_keys", column, when, where=f"kid = '{row['kid']}'")


async def write(sql: Sql, kid: str, sealed: str) -> None:
    """What someone with write access to the table might do."""
    async with sql.engine.begin() as connection:
        await connection.execute(
            text("UPDATE signing_keys SET sealed_key = :sealed WHERE kid = :kid"),
            {"sealed": sealed, "kid": kid},
        )


def _aware(value: Any) -> Any:
    from identity.clock import as_utc

    return as_utc(value)


async def test_a_key_is_sealed_and_opens_elsewhere_with_the_same_kek(
    database: Database, sql: Sql
) -> None:
    made = await source(database).ensure_first()
    assert made is not None
    assert await source(database).ensure_first() is None  # one first key, not two
    (row,) = await sql.rows("SELECT * FROM signing_keys")
    assert row["sealed_key"].startswith("gAAAAA")  # a Fernet token, nothing readable
    public = (
        row["public_jwk"]
        if isinstance(row["public_jwk"], dict)
        else orjson.loads(row["public_jwk"])
    )
    assert "d" not in public and public["kid"] == made.kid
    assert await opened(source(database)) == ([made.kid], [])


async def test_a_wrong_kek_is_one_clear_error_naming_the_variable(database: Database) -> None:
    await source(database).ensure_first()
    keys = source(database, OTHER)
    manager = KeyManager(keys, lead=LEAD, token_lifetime=LIFETIME)
    with pytest.raises(KeyFileError, match="IDENTITY_KEY_ENCRYPTION_KEY does not open it") as info:
        await manager.start()
    assert KEK not in str(info.value) and OTHER not in str(info.value)


async def test_a_tampered_or_swapped_row_is_refused_and_the_others_still_load(
    database: Database, sql: Sql
) -> None:
    first = await source(database).ensure_first()
    second = await source(database).rotate()
    third = await source(database).rotate()
    assert first is not None
    token = await sql.scalar(f"SELECT sealed_key FROM signing_keys WHERE kid = '{second.kid}'")
    flipped = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    await write(sql, second.kid, flipped)
    other = await sql.scalar(f"SELECT sealed_key FROM signing_keys WHERE kid = '{first.kid}'")
    await write(sql, third.kid, other)
    kids, problems = await opened(source(database))
    assert kids == [first.kid]
    assert any(second.kid in p and "does not open it" in p for p in problems)
    assert any(third.kid in p and "does not match" in p for p in problems)


async def test_kek_rotation_by_reseal(database: Database) -> None:
    made = await source(database, KEK).ensure_first()
    assert made is not None
    both = source(database, OTHER, KEK)  # the new one first, the old one still opening
    assert (await opened(both))[0] == [made.kid]
    assert await both.reseal() == 1
    assert await opened(source(database, OTHER)) == ([made.kid], [])  # old KEK no longer needed
    assert (await opened(source(database, KEK)))[0] == []
    with pytest.raises(KeyFileError, match="IDENTITY_KEY_ENCRYPTION_KEY"):
        await source(database, KEK).reseal()  # a KEK that opens nothing changes nothing


async def test_automatic_rotation_respects_the_lead_and_prunes_expired_keys(
    database: Database, sql: Sql
) -> None:
    keys = source(database)
    first = await keys.rotate_if_due(INTERVAL)  # an empty table gets its first key
    assert first is not None and first.activates == first.created
    assert await keys.rotate_if_due(INTERVAL) is None  # young
    await age(sql, INTERVAL - LEAD - 5)
    assert await keys.rotate_if_due(INTERVAL) is None  # not yet: the lead before its time
    await age(sql, 10)
    second = await keys.rotate_if_due(INTERVAL)
    assert second is not None and second.activates == pytest.approx(second.created + LEAD)
    assert await keys.rotate_if_due(INTERVAL) is None  # queued: never a second in the lead
    manager = KeyManager(keys, lead=LEAD, token_lifetime=LIFETIME)
    await manager.start()
    assert manager.view().active.kid == first.kid  # the new one is published, not signing
    assert set(manager.view().published) == {first.kid, second.kid}
    await age(sql, LEAD + 1)
    await manager.refresh()
    assert manager.view().active.kid == second.kid
    assert first.kid in manager.view().published  # retiring: its tokens still verify
    await age(sql, LIFETIME)
    assert await keys.rotate_if_due(INTERVAL) is None
    assert (await opened(source(database)))[0] == [second.kid]  # the expired one is gone


async def test_concurrent_rotations_make_one_key(database_url: str, sql: Sql) -> None:
    databases = [Database(database_url) for _ in range(4)]
    try:
        await source(databases[0]).ensure_first()
        await age(sql, INTERVAL)
        made = await asyncio.gather(*(source(d).rotate_if_due(INTERVAL) for d in databases))
    finally:
        for d in databases:
            await d.close()
    assert len([m for m in made if m is not None]) == 1
    assert await sql.scalar("SELECT count(*) FROM signing_keys") == 2


async def test_a_replica_picks_up_a_rotation_and_remakes_its_jwks(database: Database) -> None:
    await source(database).ensure_first()
    replicas = [KeyManager(source(database), lead=LEAD, token_lifetime=LIFETIME) for _ in "ab"]
    for replica in replicas:
        await replica.start()
    before = replicas[1].view().jwks
    assert await replicas[1].refresh() is False  # nothing changed: nothing reopened
    await source(database).rotate()
    assert await replicas[1].refresh() is True
    assert replicas[1].view().jwks != before
    assert len(orjson.loads(replicas[1].view().jwks)["keys"]) == 2


async def test_the_service_on_the_database_store_makes_its_key_and_signs(
    settings: Settings, issuers: Issuers, sql: Sql, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="identity")
    db_settings = dataclasses.replace(
        settings, key_encryption_keys=(KEK,), keys_dir=settings.keys_dir / "absent"
    )
    async with running(db_settings, issuers, FakeClock()) as (_, client):
        jwks = (await client.get("/.well-known/jwks.json")).json()
        (kid,) = [k["kid"] for k in jwks["keys"]]
        assert await sql.scalar("SELECT kid FROM signing_keys") == kid
        body = await sign_in(client, issuers.google)
        me = await client.get("/users/me", headers=bearer(body["access_token"]))
        assert me.status_code == 200
    assert not (settings.keys_dir / "absent").exists()
    sealed = await sql.scalar("SELECT sealed_key FROM signing_keys")
    assert sealed not in caplog.text and "PRIVATE KEY" not in caplog.text


async def test_the_service_refuses_to_start_with_a_wrong_kek(
    settings: Settings, issuers: Issuers, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await source(database).ensure_first()
    wrong = dataclasses.replace(settings, key_encryption_keys=(OTHER,))
    with pytest.raises(KeyFileError):
        async with running(wrong, issuers, FakeClock()):
            pass
    assert "cannot start: " in caplog.text and "IDENTITY_KEY_ENCRYPTION_KEY" in caplog.text


async def test_the_service_rotates_by_itself_and_publishes_the_new_key(
    settings: Settings, issuers: Issuers, sql: Sql
) -> None:
    db_settings = dataclasses.replace(
        settings, key_encryption_keys=(KEK,), key_rotation_interval=int(INTERVAL)
    )
    # Near the database's clock, which rotation times come from on PostgreSQL.
    clock = FakeClock(time.time())
    async with running(db_settings, issuers, clock, key_reload_interval=0.02) as (_, client):
        assert len((await client.get("/.well-known/jwks.json")).json()["keys"]) == 1
        await age(sql, INTERVAL)  # the first key has served its time
        for _ in range(200):
            await asyncio.sleep(0.02)
            if len((await client.get("/.well-known/jwks.json")).json()["keys"]) == 2:
                break
        assert await sql.scalar("SELECT count(*) FROM signing_keys") == 2
        assert len((await client.get("/.well-known/jwks.json")).json()["keys"]) == 2


def test_the_two_variables_are_checked_naming_themselves() -> None:
    with pytest.raises(ConfigError, match="IDENTITY_KEY_ENCRYPTION_KEY"):
        Settings.from_env({"IDENTITY_KEY_ENCRYPTION_KEY": "not-a-fernet-key"})
    with pytest.raises(ConfigError, match="IDENTITY_KEY_ROTATION_INTERVAL"):
        Settings.from_env({"IDENTITY_KEY_ROTATION_INTERVAL": "600"})  # under the 1200 s lead
    off = Settings.from_env({"IDENTITY_KEY_ROTATION_INTERVAL": "0"})
    assert off.key_rotation_interval == 0 and not off.keys_in_database
    both = Settings.from_env({"IDENTITY_KEY_ENCRYPTION_KEY": f"{OTHER},{KEK}"})
    assert both.keys_in_database and both.key_encryption_keys == (OTHER, KEK)
