"""Two processes racing the database key store's automatic rotation on PostgreSQL (directly and
through PgBouncer in transaction mode) make one key between them: the first key, and each
rotation that comes due (docs/operations.md, "Keys")."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from .support import sql_for

pytestmark = pytest.mark.anyio
KEK = Fernet.generate_key().decode()
# One process: wait for the shared moment, then do the work once and print what it made.
RACER = """
import asyncio, sys, time
from identity.store.database import Database
from identity.tokens.key_database import DatabaseKeys

async def main(url, mode, kek, at, work):
    database = Database(url, pool_mode=mode)
    keys = DatabaseKeys(database, (kek,), lead=4, token_lifetime=60)
    await database.fetch("SELECT 1")  # connected before the moment: the race is the work's
    time.sleep(max(0.0, at - time.time()))
    made = await (keys.ensure_first() if work == "first" else keys.rotate_if_due(3600))
    print(made.kid if made is not None else "-")
    await database.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]))
"""


def race(url: str, mode: str, work: str, tmp_path: Path) -> list[str]:
    at = str(time.time() + 2.0)  # both started and connected by then
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, url, mode, KEK, at, work],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for _ in range(2)
    ]
    outputs = []
    for racer in racers:
        out, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err
        outputs.append(out.strip())
    return outputs


async def test_two_processes_racing_rotation_make_one_key(
    pg_database: str, service_database: dict[str, str], tmp_path: Path
) -> None:
    url = service_database["IDENTITY_DATABASE_URL"]
    mode = service_database.get("IDENTITY_DATABASE_POOL_MODE", "session")
    firsts = await asyncio.to_thread(race, url, mode, "first", tmp_path)
    assert sorted(firsts)[0] == "-" and sorted(firsts)[1] != "-"  # one first key, not two
    async with sql_for(pg_database) as sql:
        for round_ in range(3):
            async with sql.engine.begin() as connection:  # the newest key's time has come
                await connection.execute(
                    text(
                        "UPDATE signing_keys SET created_at = created_at - interval '2 hours',"
                        " activates_at = activates_at - interval '2 hours'"
                    )
                )
            made = await asyncio.to_thread(race, url, mode, "rotate", tmp_path)
            assert len([m for m in made if m != "-"]) == 1, (round_, made)
        kids = await sql.scalar("SELECT count(*) FROM signing_keys")
    # The first, then one per round; keys whose tokens expired were deleted on the way.
    assert 1 <= kids <= 4
