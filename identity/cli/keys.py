"""`identity keys generate|rotate|list|prune`: the key directory from the command line
(docs/operations.md, "Keys")."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

from identity.clock import parse_duration
from identity.settings import Settings
from identity.tokens.signing_keys import KeyRing, KeyStore

from .command import CommandError, command, group
from .users import print_table


def add_parsers(commands: Any) -> None:
    keys = group(
        command(commands, "keys", "manage signing keys (IDENTITY_KEYS_DIR)", None), "keys_command"
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
    command(keys, "prune", "delete the files of expired keys", _prune)


def store(settings: Settings) -> KeyStore:
    return KeyStore(settings.keys_dir, passphrase=settings.keys_passphrase)


def ring(settings: Settings) -> KeyRing:
    return KeyRing(
        store(settings).load(),
        lead=settings.key_publish_lead,
        token_lifetime=settings.access_token_ttl + settings.clock_skew,
    )


def _generate(settings: Settings, args: argparse.Namespace) -> int:
    key = store(settings).generate_first(bits=args.bits)
    if key is None:
        existing = store(settings).load()
        print(f"identity: {settings.keys_dir} already has a key ({existing[-1].kid}); nothing done")
        return 0
    print(f"identity: generated {key.path} (kid {key.kid})")
    return 0


def _rotate(settings: Settings, args: argparse.Namespace) -> int:
    keys_store = store(settings)
    # A dangling link or an unreadable file must not stop a rotation: the rotation is how an
    # operator gets past a bad key. Each is named; running servers skip them too.
    keys, problems = keys_store.load_usable()
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
    lifetime = settings.access_token_ttl + settings.clock_skew
    before = KeyRing(keys, lead=settings.key_publish_lead, token_lifetime=lifetime)
    queued = [s for s in before.schedule(time.time()) if s.state == "next"]
    key = keys_store.generate(bits=args.bits)
    activates = key.created + (settings.key_publish_lead if keys else 0)
    print(
        f"identity: added {key.path} (kid {key.kid}); published now, signs from {when(activates)}"
    )
    for waiting in queued:
        print(
            f"identity: warning: key {waiting.key.kid} was already queued (next, signing from "
            f"{when(waiting.activates)}); it now signs only until {when(activates)}, when the "
            "new key takes over. One rotation per publish lead is enough; remove the new file "
            "if this one was a mistake",
            file=sys.stderr,
        )
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    rows = [("KID", "STATE", "CREATED", "ACTIVATES", "RETIRES")]
    for s in ring(settings).schedule(time.time()):
        retires = when(s.retires) if s.retires is not None else "-"
        rows.append((s.key.kid, s.state, when(s.key.created), when(s.activates), retires))
    print_table(rows)
    return 0


def _prune(settings: Settings, args: argparse.Namespace) -> int:
    removed = 0
    for s in ring(settings).schedule(time.time()):
        if s.state == "expired":
            s.key.path.unlink()
            print(f"identity: removed {s.key.path} (kid {s.key.kid})")
            removed += 1
    print(f"identity: {removed} expired key(s) removed")
    return 0


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
