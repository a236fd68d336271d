"""Operating the outbox: an event's delivery attempts in the admin API and `identity events ID`,
`identity outbox list|deliver`, and two workers (two replicas' pools) on one PostgreSQL
delivering each notice once."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from pathlib import Path

import httpx
import pytest

from identity.accounts.delivery import Deliveries
from identity.accounts.senders import Senders
from identity.destinations import WebhookEndpoint
from identity.settings import Settings
from identity.store.database import Database

from .fakes import FakeClock, Issuers
from .receivers import receiver
from .servers import base_env, run_cli
from .support import Sql, basic, exchange, running, sign_in

pytestmark = pytest.mark.anyio

KEY = b"0123456789abcdef0123456789abcdef"
SECRETS = {"backoffice": "backoffice-secret-0123456789"}
ADMIN = basic("backoffice", SECRETS["backoffice"])


async def test_an_events_delivery_attempts_are_shown(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql, tmp_path: Path
) -> None:
    with receiver(503, 200) as hook:
        changed = dataclasses.replace(
            settings,
            clients=SECRETS,
            admin_clients=("backoffice",),
            webhooks=(WebhookEndpoint(hook.url, KEY, frozenset({"user.created"})),),
        )
        async with running(changed, issuers, clock, delivery_interval=3600) as (app, client):
            await exchange(client, issuers.google.mint(), headers=ADMIN)
            worker = app.state.deliveries
            await worker.round()
            await sql.set_time("outbox", "next_attempt_at")
            await worker.round()
            (event,) = await sql.events("sign_in")
            shown = await client.get(f"/admin/events/{event['id']}", headers=ADMIN)
            assert (await client.get("/admin/events/0", headers=ADMIN)).status_code == 404
            assert (await client.get("/admin/events/x1", headers=ADMIN)).status_code == 404
            assert (await client.get(f"/admin/events/{event['id']}")).status_code == 401
    assert shown.status_code == 200
    body = shown.json()
    assert body["type"] == "sign_in"
    (notice,) = body["notices"]
    assert (notice["event"], notice["state"], notice["attempts"]) == (
        "user.created",
        "delivered",
        2,
    )
    assert [(d["outcome"], d["status_code"]) for d in notice["deliveries"]] == [
        ("failed", 503),
        ("delivered", 200),
    ]
    if not settings.database_url.startswith("sqlite"):
        return  # the command line below reads the same rows; once is enough
    env = base_env(
        IDENTITY_DATABASE_URL=settings.database_url, IDENTITY_KEYS_DIR=str(settings.keys_dir)
    )
    shown_cli = run_cli("events", str(event["id"]), "--json", env=env, cwd=tmp_path)
    assert shown_cli.returncode == 0, shown_cli.stderr
    assert json.loads(shown_cli.stdout)["notices"][0]["deliveries"][1]["outcome"] == "delivered"
    text = run_cli("events", str(event["id"]), env=env, cwd=tmp_path)
    assert "failed  503" in text.stdout and "delivered  200" in text.stdout


async def test_outbox_list_and_deliver_on_the_command_line(
    settings: Settings, issuers: Issuers, clock: FakeClock, tmp_path: Path, sql: Sql
) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("the commands run the same statements as the worker, tested on both")
    with receiver(503, 200) as hook:
        hooks = tmp_path / "hooks.toml"
        hooks.write_text(
            f'[[endpoints]]\nurl = "{hook.url}"\nsecret = "whsec_{_b64(KEY)}"\n'
            'events = ["user.created"]\n'
        )
        changed = dataclasses.replace(
            settings,
            webhooks=(WebhookEndpoint(hook.url, KEY, frozenset({"user.created"})),),
        )
        async with running(changed, issuers, clock, delivery_interval=3600) as (app, client):
            await sign_in(client, issuers.google)
            await app.state.deliveries.round()  # 503: failing, backing off
        env = base_env(
            IDENTITY_DATABASE_URL=settings.database_url,
            IDENTITY_KEYS_DIR=str(settings.keys_dir),
            IDENTITY_WEBHOOKS_FILE=str(hooks),
        )
        listed = run_cli("outbox", "list", env=env, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert "user.created" in listed.stdout and "failed 503" in listed.stdout
        delivered = run_cli("outbox", "deliver", "--json", env=env, cwd=tmp_path)
        assert delivered.returncode == 0, delivered.stderr
        assert json.loads(delivered.stdout) == {"attempted": 1, "pending": 0}
        assert len(hook.received) == 2
        after = run_cli("outbox", "list", "--json", env=env, cwd=tmp_path)
        assert json.loads(after.stdout) == []
    assert await sql.scalar("SELECT state FROM outbox") == "delivered"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_two_workers_deliver_each_notice_once(
    settings: Settings, issuers: Issuers, clock: FakeClock, sql: Sql, database_url: str
) -> None:
    """Two replicas' workers (each its own pool) race over one PostgreSQL: each notice reaches
    the receiver once."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one process: nothing to race")
    with receiver(200) as hook:
        endpoint = WebhookEndpoint(hook.url, KEY, frozenset({"user.created"}))
        changed = dataclasses.replace(settings, webhooks=(endpoint,))
        async with running(changed, issuers, clock, delivery_interval=3600) as (_, client):
            for n in range(40):
                await sign_in(client, issuers.google, sub=f"p-{n}", email=f"p{n}@gmail.com")
        databases = [Database(database_url) for _ in range(2)]
        http = httpx.AsyncClient()
        try:
            workers = [
                Deliveries(
                    db,
                    Senders(
                        http,
                        keys=None,  # type: ignore[arg-type]  # webhooks only
                        issuer="x",
                        webhooks=(endpoint,),
                        backchannel={},
                        production=False,
                    ),
                    None,
                    batch=5,
                )
                for db in databases
            ]

            async def drain(worker: Deliveries) -> int:
                total = 0
                while done := await worker.round():
                    total += done
                return total

            started = time.monotonic()
            counts = await asyncio.gather(*(drain(w) for w in workers))
            assert time.monotonic() - started < 60
        finally:
            await http.aclose()
            for db in databases:
                await db.close()
    ids = [r.headers["webhook-id"] for r in hook.received]
    assert len(ids) == 40 and len(set(ids)) == 40  # each once
    assert sum(counts) == 40 and all(counts)  # both took part
    assert await sql.scalar("SELECT count(*) FROM deliveries") == 40
