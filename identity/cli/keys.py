"""`identity keys generate|rotate|list|prune|import|reseal`: the signing keys from the command
line, in whichever store the settings choose (docs/operations.md, "Keys"): the database when
IDENTITY_KEY_ENCRYPTION_KEY is set, else the key directory."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from identity.clock import parse_duration
from identity.settings import Settings
from identity.store.database import Database
from identity.tokens.signing_keys import (
    DatabaseKeys,
    FileKey,
    KeyRing,
    KeyStore,
    SigningKey,
    key_source,
    token_lifetime,
)

from .command import CommandError, command, group
from .users import print_table

T = TypeVar("T")


def add_parsers(commands: Any) -> None:
    keys = group(
        command(
            commands,
            "keys",
            "manage signing keys (IDENTITY_KEYS_DIR, or the database with "
            "IDENTITY_KEY_ENCRYPTION_KEY)",
            None,
        ),
        "keys_command",
    )
    generate = command(keys, "generate", "create the first signing key", _generate)
    generate.add_argument("--bits", type=int, default=2048, help="RSA modulus size")
    rotate = command(keys, "rotate", "add a key: published now, signing after the lead", _rotate)
    rotate.add_argument("--bits", type=int, default=2048, help="RSA modulus size")
    rotate.add_argument(
        "--if-older-than",
        metavar="AGE",
        help="rotate only when the newest key is older than AGE (30m, 24h, 30d)",
    )
    command(keys, "list", "kid, state and schedule of every key", _list)
    command(keys, "prune", "delete expired keys", _prune)
    imported = command(
        keys, "import", "copy a key directory's keys into the database (to migrate)", _import
    )
    imported.add_argument(
        "directory", nargs="?", type=Path, help="the key directory (default: IDENTITY_KEYS_DIR)"
    )
    command(
        keys,
        "reseal",
        "seal every key in the database under the first IDENTITY_KEY_ENCRYPTION_KEY",
        _reseal,
    )


def store(settings: Settings) -> KeyStore:
    return KeyStore(settings.keys_dir, passphrase=settings.keys_passphrase)


def ring(settings: Settings) -> KeyRing:
    """Every usable key of the configured store (the strict read: an unusable one fails)."""
    in_database = settings.keys_in_database
    keys = _in_database(settings, fetched) if in_database else store(settings).load()
    return KeyRing(keys, lead=settings.key_publish_lead, token_lifetime=token_lifetime(settings))


async def fetched(source: DatabaseKeys) -> list[SigningKey]:
    await source.fetch()
    keys, problems = source.load_usable()
    if problems:
        raise problems[0]
    return keys


def _in_database(settings: Settings, work: Callable[[DatabaseKeys], Awaitable[T]]) -> T:
    return asyncio.run(in_database(settings, work))


async def in_database(settings: Settings, work: Callable[[DatabaseKeys], Awaitable[T]]) -> T:
    """`work` done on the database store, on a connection of its own."""
    database = Database(settings.database_url, pool_mode=settings.database_pool_mode)
    try:
        source = key_source(settings, database)
        assert isinstance(source, DatabaseKeys)  # noqa: S101 - only called with keys_in_database
        return await work(source)
    finally:
        await database.close()


async def database_ready(source: DatabaseKeys) -> SigningKey | None:
    """What `identity serve` does before starting on the database store: the first key made if
    there is none, and every key opened (a wrong IDENTITY_KEY_ENCRYPTION_KEY stops it here, in
    one line). The key made, if any."""
    made = await source.ensure_first()
    await fetched(source)
    return made


def _database_only(settings: Settings, what: str) -> None:
    if not settings.keys_in_database:
        raise CommandError(
            f"keys {what}: needs the database key store; set IDENTITY_KEY_ENCRYPTION_KEY"
        )


def _generate(settings: Settings, args: argparse.Namespace) -> int:
    if settings.keys_in_database:
        made = _in_database(settings, lambda source: source.ensure_first(bits=args.bits))
        if made is None:
            print("identity: the database already has a signing key; nothing done")
        else:
            print(f"identity: generated a signing key in the database (kid {made.kid})")
        return 0
    key = store(settings).generate_first(bits=args.bits)
    if key is None:
        existing = store(settings).load()
        print(f"identity: {settings.keys_dir} already has a key ({existing[-1].kid}); nothing done")
        return 0
    print(f"identity: generated {key.path} (kid {key.kid})")
    return 0


def _rotate(settings: Settings, args: argparse.Namespace) -> int:
    keys: Sequence[SigningKey]
    if settings.keys_in_database:
        keys = _in_database(settings, _usable)
    else:
        # A dangling link or an unreadable file must not stop a rotation: the rotation is how
        # an operator gets past a bad key. Each is named; running servers skip them too.
        keys, problems = store(settings).load_usable()
        for problem in problems:
            print(f"identity: skipped {problem}", file=sys.stderr)
    if args.if_older_than and keys:
        try:
            max_age = parse_duration(args.if_older_than)
        except ValueError as error:
            raise CommandError(f"--if-older-than: {error}") from None
        if time.time() - max(k.created for k in keys) < max_age:
            print(f"identity: newest key is younger than {args.if_older_than}; nothing done")
            return 0
    before = KeyRing(keys, lead=settings.key_publish_lead, token_lifetime=token_lifetime(settings))
    queued = [s for s in before.schedule(time.time()) if s.state == "next"]
    if settings.keys_in_database:
        key = _in_database(settings, lambda source: source.rotate(bits=args.bits))
        where = "a key to the database"
    else:
        key = store(settings).generate(bits=args.bits)
        where = str(key.path)
    activates = key.activates or key.created + (settings.key_publish_lead if keys else 0)
    print(f"identity: added {where} (kid {key.kid}); published now, signs from {when(activates)}")
    for waiting in queued:
        print(
            f"identity: warning: key {waiting.key.kid} was already queued (next, signing from "
            f"{when(waiting.activates)}); it now signs only until {when(activates)}, when the "
            "new key takes over. One rotation per publish lead is enough",
            file=sys.stderr,
        )
    return 0


async def _usable(source: DatabaseKeys) -> list[SigningKey]:
    await source.fetch()
    keys, problems = source.load_usable()
    for problem in problems:
        print(f"identity: skipped {problem}", file=sys.stderr)
    return keys


def _list(settings: Settings, args: argparse.Namespace) -> int:
    rows = [("KID", "STATE", "CREATED", "ACTIVATES", "RETIRES")]
    for s in ring(settings).schedule(time.time()):
        retires = when(s.retires) if s.retires is not None else "-"
        rows.append((s.key.kid, s.state, when(s.key.created), when(s.activates), retires))
    print_table(rows)
    return 0


def _prune(settings: Settings, args: argparse.Namespace) -> int:
    if settings.keys_in_database:
        kids = _in_database(settings, lambda source: source.prune())
        for kid in kids:
            print(f"identity: deleted key {kid} from the database")
        print(f"identity: {len(kids)} expired key(s) removed")
        return 0
    removed = 0
    for s in ring(settings).schedule(time.time()):
        if s.state == "expired" and isinstance(s.key, FileKey):
            s.key.path.unlink()
            print(f"identity: removed {s.key.path} (kid {s.key.kid})")
            removed += 1
    print(f"identity: {removed} expired key(s) removed")
    return 0


def _import(settings: Settings, args: argparse.Namespace) -> int:
    _database_only(settings, "import")
    directory = args.directory or settings.keys_dir
    # The strict read: a key that cannot be read must not be left behind unnoticed.
    keys = KeyStore(directory, passphrase=settings.keys_passphrase).load()
    if not keys:
        raise CommandError(f"{directory}: no key file to import")
    added = _in_database(settings, lambda source: source.import_keys(keys))
    for key in added:
        print(f"identity: imported kid {key.kid}")
    print(f"identity: {len(added)} key(s) imported, {len(keys) - len(added)} already there")
    return 0


def _reseal(settings: Settings, args: argparse.Namespace) -> int:
    _database_only(settings, "reseal")
    count = _in_database(settings, lambda source: source.reseal())
    print(f"identity: {count} key(s) sealed under the first IDENTITY_KEY_ENCRYPTION_KEY")
    return 0


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
