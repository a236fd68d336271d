"""The `identity` command. This is the CLI's one read of the environment (docs/operations.md).

    identity serve | migrate | check | prune | keys generate|rotate|list|prune
    identity users list|show|disable|enable|revoke-sessions|delete | identity events

`identity` alone, or a command group alone, prints its help. A failure is one line on stderr,
never a traceback; the exit status says which kind (identity.cli.command lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson

from identity import __version__, environment
from identity.accounts.services import data_services
from identity.errors import IdentityError, KeysUnavailable, TokenRejected
from identity.settings import ConfigError, Settings
from identity.store import schema
from identity.store.database import Database
from identity.tokens import id_tokens, providers
from identity.tokens.signing_keys import KeyFileError

from . import keys, serve
from . import outbox as outbox_commands
from . import users as admin_commands
from .command import FAILED, INTERRUPTED, OK, USAGE, CommandError, Parser, command, group


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.handler is None:  # `identity`, `identity keys`, `identity users`: their help
        args.help_of.print_help()
        return OK
    try:
        if args.command == "serve":
            serve.export_address(args)
        settings = Settings.from_env(environment.load(os.environ, Path.cwd()))
        return int(args.handler(settings, args))
    except ConfigError as error:
        for problem in error.problems:
            print(f"identity: {problem}", file=sys.stderr)
        return USAGE
    except (CommandError, KeyFileError) as error:
        print(f"identity: {error}", file=sys.stderr)
        return FAILED
    except IdentityError as error:  # from the services: a bad id, the database down…
        print(f"identity: {error.description}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:  # Ctrl-C before the service was serving (it stops cleanly then)
        print("identity: interrupted", file=sys.stderr)
        return INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="identity", description="OpenID Connect token exchange")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = group(parser, "command")
    serve.add_parser(commands)
    command(commands, "migrate", "apply the database migrations (IDENTITY_DATABASE_URL)", _migrate)
    command(
        commands, "check", "check configuration, database, keys and providers' key sets", _check
    )
    prune = command(commands, "prune", "delete expired rows once (the janitor's work)", _prune)
    prune.add_argument("--json", action="store_true", help="print JSON instead of a table")
    keys.add_parsers(commands)
    admin_commands.add_parsers(commands)
    outbox_commands.add_parsers(commands)
    return parser


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    before, after = serve.migrate_database(settings)
    if before == after:
        print(f"identity: database already at the latest migration ({after})")
    else:
        print(f"identity: database migrated from {before or 'nothing (empty)'} to {after}")
    return OK


def _prune(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> dict[str, int | None]:
        database = Database(settings.database_url, pool_mode=settings.database_pool_mode)
        try:
            return await data_services(settings, database).janitor.prune()
        finally:
            await database.close()

    done = asyncio.run(run())
    if args.json:
        print(orjson.dumps(done).decode())
    else:
        for name, count in done.items():
            print(f"{name:<20} {'failed (see the log)' if count is None else f'{count} deleted'}")
    return FAILED if None in done.values() else OK


def _check(settings: Settings, args: argparse.Namespace) -> int:
    problems = asyncio.run(_problems(settings))
    print("identity: security-event receivers (docs/signals.md):")
    for line in receivers(settings):
        print(f"  - {line}")
    if problems:
        print("identity: configuration problems:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return FAILED
    print("identity: configuration, database, keys and every provider's keys are fine")
    return OK


async def _problems(settings: Settings) -> list[str]:
    problems = [
        f"{name}: not a setting of identity" + (f" (did you mean {close}?)" if close else "")
        for name, close in settings.unknown_variables
    ]
    if not settings.keys_in_database:
        try:
            if not keys.ring(settings).keys:
                problems.append(f"IDENTITY_KEYS_DIR: no signing key in {settings.keys_dir}")
        except KeyFileError as error:
            problems.append(f"IDENTITY_KEYS_DIR: {error}")
    database = await schema.diagnose(settings.database_url, settings.database_pool_mode)
    if database is not None:
        problems.append(f"IDENTITY_DATABASE_URL: {database}")
    elif settings.keys_in_database:
        try:
            if not await keys.in_database(settings, keys.fetched):
                problems.append("IDENTITY_KEY_ENCRYPTION_KEY: no signing key in the database")
        except KeyFileError as error:
            problems.append(str(error))
    enabled = providers.configured(settings)
    if not enabled:
        problems.append(
            "IDENTITY_GOOGLE_CLIENT_IDS: no provider is configured; every exchange will be refused"
        )
    async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as http:
        caches = id_tokens.key_sets(enabled, http, clock=time.time, production=settings.production)
        for provider in enabled:
            cache = caches[provider.name]
            with contextlib.suppress(KeysUnavailable, TokenRejected):
                await cache.get("-", "RS256")  # fetches the set; the kid is not expected to exist
            if not cache.kids:
                problems.append(f"{provider.name}: no usable keys at {cache.name}")
    return problems


def receivers(settings: Settings) -> list[str]:
    """Which receivers of providers' security events are live, and what each provider needs
    registered to send to it."""
    base = settings.issuer
    lines = []
    if settings.google_client_ids:
        lines.append(
            f"google: live at POST {base}/signals/google; register it in the RISC API's stream "
            f"configuration (stream:update) of the project of {settings.google_client_ids[0]}"
        )
    else:
        lines.append("google: off (IDENTITY_GOOGLE_CLIENT_IDS is unset)")
    if settings.apple_client_ids:
        lines.append(
            f"apple: live at POST {base}/signals/apple; set it as the Server-to-Server "
            "Notification Endpoint of each Services ID / App ID in the developer portal"
        )
        lines.append(
            "apple: token revocation "
            + (
                "on"
                if settings.apple_revocation
                else "off (set IDENTITY_APPLE_TEAM_ID, IDENTITY_APPLE_KEY_ID and "
                "IDENTITY_APPLE_PRIVATE_KEY_FILE)"
            )
        )
    else:
        lines.append("apple: off (IDENTITY_APPLE_CLIENT_IDS is unset)")
    for provider in settings.oidc_providers:
        if provider.backchannel_logout:
            lines.append(
                f"{provider.name}: back-channel logout live at POST "
                f"{base}/signals/backchannel-logout/{provider.name}; register it as the "
                "client's backchannel_logout_uri at the provider"
            )
        else:
            lines.append(
                f"{provider.name}: back-channel logout off (backchannel_logout = true in its "
                "table of IDENTITY_PROVIDERS_FILE)"
            )
    return lines
