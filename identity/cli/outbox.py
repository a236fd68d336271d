"""`identity outbox list|deliver`: the notices waiting for delivery, and one delivery round now
(docs/notifications.md, "Operating it"); `identity events ID` shows one event's attempts."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import orjson

from identity.accounts.delivery import Deliveries
from identity.accounts.senders import TIMEOUT, from_settings
from identity.accounts.services import data_services
from identity.clock import utc
from identity.settings import Settings
from identity.store.database import Database
from identity.store.shapes import NoticePublic
from identity.tokens import apple_revocation
from identity.tokens.provider_tokens import Sealer
from identity.tokens.signing_keys import KeyManager, KeyStore

from .command import command, group
from .users import _run, _time, print_table

_DUE_NOW = "UPDATE outbox SET next_attempt_at = $1 WHERE state = 'pending'"


def add_parsers(commands: Any) -> None:
    actions = group(
        command(commands, "outbox", "notices waiting for delivery", None), "outbox_command"
    )
    listing = command(actions, "list", "pending and failing notices, oldest first", _list)
    listing.add_argument("--all", action="store_true", help="delivered and dropped ones too")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    deliver = command(actions, "deliver", "attempt every pending notice now", _deliver)
    deliver.add_argument("--json", action="store_true", help="print JSON instead of text")


def _list(settings: Settings, args: argparse.Namespace) -> int:
    notices = _run(settings, lambda s: s.notice_log.listing(finished=args.all))
    if args.json:
        print(orjson.dumps([n.model_dump(mode="json") for n in notices]).decode())
        return 0
    print_notices(notices)
    return 0


def print_notices(notices: list[NoticePublic]) -> None:
    rows: list[tuple[str, ...]] = [
        ("ID", "EVENT", "DESTINATION", "STATE", "ATTEMPTS", "NEXT", "LAST")
    ]
    for n in notices:
        last = n.deliveries[-1] if n.deliveries else None
        outcome = f"{last.outcome} {last.status_code or last.error or ''}".strip() if last else "-"
        due = _time(n.next_attempt_at) if n.next_attempt_at else "-"
        rows.append((str(n.id), n.event, n.destination, n.state, str(n.attempts), due, outcome))
    print_table(rows)


def _deliver(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> dict[str, int]:
        keys = KeyManager(
            KeyStore(settings.keys_dir, passphrase=settings.keys_passphrase),
            lead=settings.key_publish_lead,
            token_lifetime=settings.access_token_ttl + settings.clock_skew,
        )
        keys.load()
        database = Database(settings.database_url, pool_mode=settings.database_pool_mode)
        http = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        try:
            async with database.transaction() as tx:
                await tx.fetch(_DUE_NOW, _now())
            sealer = Sealer(settings.token_encryption_keys)
            apple = apple_revocation.from_settings(settings, http, sealer)
            senders = from_settings(settings, http, keys, time.time, apple=apple)
            deliveries = Deliveries(database, senders, None)
            claimed = 0
            for _ in range(1000):  # a round claims at most a batch; failures wait their backoff
                done = await deliveries.round()
                claimed += done
                if not done:
                    break
            left = len(await data_services(settings, database).notice_log.listing())
            return {"attempted": claimed, "pending": left}
        finally:
            await http.aclose()
            await database.close()

    result = asyncio.run(run())
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(f"identity: {result['attempted']} attempted, {result['pending']} still pending")
    return 0


def _now() -> Any:
    return utc(time.time())
