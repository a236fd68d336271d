"""The hot-path PostgreSQL functions: the living .sql files are what the migrations install, a
shipped copy never changes, and each call names the function's parameters, in order
(docs/architecture.md, "The SQL functions")."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from identity.accounts import rotation, sign_in
from identity.store.database import alembic_config, migrations_dir
from identity.store.functions import SQL_DIR, Call

pytestmark = pytest.mark.anyio

CALLS: dict[str, Call[Any]] = {
    "identity_sign_in": sign_in.CALL,
    "identity_refresh": rotation.CALL,
}
FROZEN = migrations_dir() / "sql"
# A frozen copy is never edited once written: a database migrated past its revision keeps what
# it installed, so an edit there changes new databases only. Pin each new copy's digest here.
PINNED = {
    "0005/identity_refresh.sql": "76b07cddc93f95257f46ece11a09daddd71f6cc716709d02b48fead06dbaea84",
    "0005/identity_sign_in.sql": "f961209e697a4bd6e99a36ee9e17a31f393ec8ec8d31c0ae4b53fe867a7ac693",
    "0006/identity_refresh.sql": "a8b745e035e609d93bf3edbf4567d1356f4fe243b3618b4030d3ceae752b4219",
    "0006/identity_sign_in.sql": "00398904cc8fc143cbe9fd6de965d6fa4161d893907450e9551d006acf958d17",
    "0007/identity_refresh.sql": "c20f35e03fd0fe0713f7a62413f06ff10bdc69aeba8c3c42d307867e74a88378",
    "0007/identity_sign_in.sql": "a6340d1765936659ccb489c99bd9129f80924c643af408492945f419b93eecd3",
    "0012/identity_refresh.sql": "0b12381e5c133ec05c84f2ff6682d6febc0f7d7b9473d8fe5f8144113ad2ad3e",
    "0012/identity_sign_in.sql": "bd361fe5d073a67c97bcc1bd198561a176ec6fbac0df331397c2c90eb856087c",
}


def living(function: str) -> str:
    return (SQL_DIR / f"{function}.sql").read_text(encoding="utf-8")


def revisions() -> list[str]:
    """The migrations' revisions, oldest first."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [script.revision for script in reversed(list(script.walk_revisions()))]


def test_every_function_has_its_living_file_and_its_call() -> None:
    assert {path.stem for path in SQL_DIR.glob("*.sql")} == set(CALLS)
    assert all(call.function == function for function, call in CALLS.items())


@pytest.mark.parametrize("function", sorted(CALLS))
def test_the_newest_frozen_copy_is_the_living_file(function: str) -> None:
    copies = [FROZEN / r / f"{function}.sql" for r in revisions()]
    newest = [path for path in copies if path.exists()][-1]
    assert newest.read_text(encoding="utf-8") == living(function), (
        f"identity/store/sql/{function}.sql differs from {newest.relative_to(FROZEN.parent)}: "
        "a change reaches databases only through a new migration with its own frozen copy"
    )


def test_frozen_copies_are_never_edited() -> None:
    found = {
        path.relative_to(FROZEN).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in FROZEN.rglob("*.sql")
    }
    assert found == PINNED
    assert {Path(name).parent.name for name in found} <= set(revisions())


@pytest.fixture
async def connection(pg_database: str) -> AsyncIterator[asyncpg.Connection]:
    url = make_url(pg_database).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        yield connection
    finally:
        await connection.close()


async def _definitions(connection: asyncpg.Connection, function: str) -> dict[str, str]:
    """PostgreSQL's rendering of each function of this name, by schema, the schema name left
    out of it."""
    rows = await connection.fetch(
        "SELECT n.nspname AS schema, pg_get_functiondef(p.oid) AS definition"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = $1",
        function,
    )
    return {
        r["schema"]: r["definition"].replace(f" {r['schema']}.{function}(", f" {function}(", 1)
        for r in rows
    }


@pytest.mark.parametrize("function", sorted(CALLS))
async def test_the_function_installed_at_head_is_the_living_file(
    connection: asyncpg.Connection, function: str
) -> None:
    """PostgreSQL keeps a function's body byte for byte but rewrites its header: the name
    schema-qualified, type names canonical (`timestamptz` → `timestamp with time zone`), the
    parameters on one line, `$function$` quoting. So the file is run in a scratch schema, and
    PostgreSQL's rendering of it (`pg_get_functiondef`) must equal that of the installed one
    whole, only the schema name left out."""
    found = await _installed_beside(connection, function, living(function))
    assert set(found) == {"public", "identity_scratch"}, "one function of this name, no overload"
    assert found["public"] == found["identity_scratch"]
    assert "$function$" in found["public"]


async def _installed_beside(
    connection: asyncpg.Connection, function: str, source: str
) -> dict[str, str]:
    """The installed function's rendering and that of `source` run in a scratch schema."""
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute("CREATE SCHEMA identity_scratch")
        await connection.execute("SET LOCAL search_path = identity_scratch, public")
        await connection.execute(source)
        return await _definitions(connection, function)
    finally:
        await transaction.rollback()  # the scratch schema goes with it


async def test_a_downgrade_restores_the_previous_revisions_functions(
    connection: asyncpg.Connection, pg_database: str
) -> None:
    """Down to 0005, each function is 0005's frozen copy again, alone (no overload left by the
    newer signature); up again, the living file."""
    config = alembic_config(pg_database)
    # Alembic runs its own event loop: in a thread, beside this test's.
    await asyncio.to_thread(command.downgrade, config, "0005")
    try:
        for function in CALLS:
            previous = (FROZEN / "0005" / f"{function}.sql").read_text(encoding="utf-8")
            installed = await connection.fetchval(
                "SELECT count(*) FROM pg_proc WHERE proname = $1", function
            )
            assert installed == 1, f"{function}: the newer signature was left beside"
            found = await _installed_beside(connection, function, previous)
            assert found["public"] == found["identity_scratch"]
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
    for function in CALLS:
        found = await _installed_beside(connection, function, living(function))
        assert found["public"] == found["identity_scratch"]


@pytest.mark.parametrize("function", sorted(CALLS))
async def test_each_call_names_the_parameters_of_its_function_in_order(
    connection: asyncpg.Connection, function: str
) -> None:
    row = await connection.fetchrow(
        "SELECT proargnames, proargmodes::text[] FROM pg_proc WHERE proname = $1", function
    )
    assert row is not None
    modes = row["proargmodes"] or ["i"] * len(row["proargnames"])
    inputs = tuple(n for n, m in zip(row["proargnames"], modes, strict=True) if m in "ibv")
    assert CALLS[function].names == inputs
    assert len(inputs) == {"identity_sign_in": 38, "identity_refresh": 20}[function]


async def test_a_misnamed_argument_is_refused_by_postgresql(
    connection: asyncpg.Connection,
) -> None:
    """Two swapped arguments cannot pass silently: each is bound by name, and a name the
    function lacks is an error, not a value in another parameter's place."""
    names = list(rotation.CALL.names)
    names[names.index("p_successor")] = "p_succesor"
    misnamed = Call[None]("identity_refresh", tuple((name, lambda _: None) for name in names))
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await connection.fetch(misnamed.query, *misnamed.values(None))
