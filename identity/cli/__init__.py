"""The `identity` command. This is the CLI's one read of the environment (docs/operations.md).

    identity serve | migrate | check | prune | keys generate|rotate|list|prune
    identity users list|show|disable|enable|revoke-sessions|delete | identity events

A bad configuration value or argument is one line on stderr and a non-zero exit, never a
traceback: 2 for configuration, 1 for everything else.

Longer than most modules: it is the table of every command, each a short function.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging.config
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import uvicorn
from uvicorn.supervisors import Multiprocess

from identity import environment, logs
from identity.app import data_services
from identity.clock import parse_duration
from identity.errors import IdentityError, KeysUnavailable, TokenRejected
from identity.settings import ConfigError, Settings
from identity.store.database import Database, alembic_config, create_engine, migrate
from identity.tokens import id_tokens, providers
from identity.tokens.signing_keys import KeyFileError, KeyRing, KeyStore

from . import users as admin_commands


class CommandError(Exception):
    """A problem to report as one line, exit status 1."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            _export_address(args)
        settings = Settings.from_env(environment.load(os.environ, Path.cwd()))
        return int(args.handler(settings, args))
    except ConfigError as error:
        for problem in error.problems:
            print(f"identity: {problem}", file=sys.stderr)
        return 2
    except (CommandError, KeyFileError) as error:
        print(f"identity: {error}", file=sys.stderr)
        return 1
    except IdentityError as error:  # from the services: a bad id, the database down…
        print(f"identity: {error.description}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="identity", description="OpenID Connect token exchange")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service with uvicorn")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=_serve)

    commands.add_parser("migrate", help="apply migrations").set_defaults(handler=_migrate)
    commands.add_parser("check", help="validate configuration").set_defaults(handler=_check)
    prune = commands.add_parser("prune", help="delete expired rows once (the janitor's work)")
    prune.add_argument("--json", action="store_true")
    prune.set_defaults(handler=_prune)

    keys = commands.add_parser("keys", help="manage signing keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = key_commands.add_parser("generate", help="create the first signing key")
    generate.add_argument("--bits", type=int, default=2048)
    generate.set_defaults(handler=_keys_generate)
    rotate = key_commands.add_parser("rotate", help="add a key; it signs after the lead time")
    rotate.add_argument("--bits", type=int, default=2048)
    rotate.add_argument("--if-older-than", metavar="AGE", help="e.g. 30d: rotate only if due")
    rotate.set_defaults(handler=_keys_rotate)
    key_commands.add_parser("list", help="show keys and states").set_defaults(handler=_keys_list)
    key_commands.add_parser("prune", help="remove expired keys").set_defaults(handler=_keys_prune)

    admin_commands.add_parsers(commands)
    return parser


def _export_address(args: argparse.Namespace) -> None:
    """`serve --host/--port` become IDENTITY_HOST/IDENTITY_PORT, read here and by each worker,
    so the development issuer (and discovery, and mail links) names the port actually served."""
    if args.port is not None:
        if not 1 <= args.port <= 65_535:
            # uvicorn would take 99999 modulo 65536 and listen somewhere else.
            raise ConfigError(f"--port: must be between 1 and 65535 (got {args.port})")
        os.environ["IDENTITY_PORT"] = str(args.port)
    if args.host:
        os.environ["IDENTITY_HOST"] = args.host


def _store(settings: Settings) -> KeyStore:
    return KeyStore(settings.keys_dir, passphrase=settings.keys_passphrase)


def _ring(settings: Settings) -> KeyRing:
    return KeyRing(
        _store(settings).load(),
        lead=settings.key_publish_lead,
        token_lifetime=settings.access_token_ttl + settings.clock_skew,
    )


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    log_format = logs.resolve(settings.log_format, production=settings.production)
    log_config = logs.config(log_format)
    logging.config.dictConfig(log_config)
    log = logging.getLogger("identity.cli")
    _first_words(settings, log)
    store = _store(settings)
    if not store.load():
        if settings.production:
            # Every replica would generate its own key: tokens would fail on the others.
            raise CommandError(
                f"IDENTITY_KEYS_DIR: {settings.keys_dir} holds no signing key; "
                "run `identity keys generate` once and share the directory"
            )
        key = store.generate()
        log.info("generated a signing key", extra={"event": {"path": str(key.path)}})
    if settings.migrate_on_start:
        _migrate_database(settings)
    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    config = uvicorn.Config(
        "identity.app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=args.workers,
        log_config=log_config,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    # Workers read the environment again: hand them the format chosen here (a worker's stderr
    # is this terminal or pipe too, but the choice must not differ between processes).
    os.environ["IDENTITY_LOG_FORMAT"] = log_format
    if args.workers > 1:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Workers add up their metrics through this directory (read by Settings in each).
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="identity-metrics-")
        for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
            stale.unlink()  # counters of a previous run would be added to this one's
        _Supervisor(config, sockets=[config.bind_socket()]).run()
        return 0
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler that
    # was there before it. That handler is this no-op, so the process exits 0 (docs/operations.md).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    return 0 if server.started else 3


def _first_words(settings: Settings, log: logging.Logger) -> None:
    """What a newcomer needs to hear before the first sign-in can work, in words."""
    for name, close in settings.unknown_variables:
        hint = f"; did you mean {close}?" if close else ""
        log.warning(f"{name} is not a setting of identity and is ignored{hint}")
    if not settings.any_provider:
        log.warning(
            "No sign-in provider is configured, so every token exchange is refused. To accept "
            "Google sign-ins, set your OAuth client ID, for example "
            "IDENTITY_GOOGLE_CLIENT_IDS=1234-abc.apps.googleusercontent.com "
            "(docs/providers.md has Microsoft, Apple and any OIDC issuer)"
        )
    if not settings.clients:
        log.warning(
            "IDENTITY_CLIENTS is not set: /token answers any caller. Give your web app's server "
            "a secret, for example IDENTITY_CLIENTS=nextjs:$(openssl rand -hex 24)"
        )
    if settings.smtp_url is None:
        log.warning("IDENTITY_SMTP_URL is not set: verification mails are written to this log")


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, except that SIGHUP re-reads keys instead of restarting."""

    def handle_hup(self) -> None:
        # Each worker reloads its keys on SIGHUP (see identity.app); nobody restarts. Only ready
        # workers are signalled: one still starting has no handler yet (SIGHUP would kill it),
        # and it reads the key directory itself when it builds its app.
        for process in self.processes:
            if process.pid is not None and process.is_ready(timeout=2):
                os.kill(process.pid, signal.SIGHUP)


def _migrate_database(settings: Settings) -> None:
    if settings.database_url.startswith("sqlite"):
        path = settings.database_url.split(":///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        migrate(settings.database_url, pool_mode=settings.database_pool_mode)
    except Exception as error:  # any failure to reach or migrate is this one line
        raise CommandError(
            f"IDENTITY_DATABASE_URL: cannot migrate ({type(error).__name__})"
        ) from None


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    _migrate_database(settings)
    print("identity: database is at the latest migration")
    return 0


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
    return 1 if None in done.values() else 0


def _keys_generate(settings: Settings, args: argparse.Namespace) -> int:
    store = _store(settings)
    existing = store.load()
    if existing:
        print(f"identity: {settings.keys_dir} already has a key ({existing[-1].kid}); nothing done")
        return 0
    key = store.generate(bits=args.bits)
    print(f"identity: generated {key.path} (kid {key.kid})")
    return 0


def _keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    store = _store(settings)
    keys = store.load()
    if args.if_older_than and keys:
        newest = max(k.created for k in keys)
        try:
            max_age = parse_duration(args.if_older_than)
        except ValueError as error:
            raise CommandError(f"--if-older-than: {error}") from None
        if time.time() - newest < max_age:
            print(f"identity: newest key is younger than {args.if_older_than}; nothing done")
            return 0
    key = store.generate(bits=args.bits)
    activates = key.created + (settings.key_publish_lead if keys else 0)
    print(
        f"identity: added {key.path} (kid {key.kid}); published now, signs from {_when(activates)}"
    )
    return 0


def _keys_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = [("KID", "STATE", "CREATED", "ACTIVATES", "RETIRES")]
    for s in _ring(settings).schedule(time.time()):
        retires = _when(s.retires) if s.retires is not None else "-"
        rows.append((s.key.kid, s.state, _when(s.key.created), _when(s.activates), retires))
    admin_commands.print_table(rows)
    return 0


def _keys_prune(settings: Settings, args: argparse.Namespace) -> int:
    removed = 0
    for s in _ring(settings).schedule(time.time()):
        if s.state == "expired":
            s.key.path.unlink()
            print(f"identity: removed {s.key.path} (kid {s.key.kid})")
            removed += 1
    print(f"identity: {removed} expired key(s) removed")
    return 0


def _check(settings: Settings, args: argparse.Namespace) -> int:
    problems = asyncio.run(_problems(settings))
    if problems:
        print("identity: configuration problems:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("identity: configuration, database, keys and every provider's keys are fine")
    return 0


async def _problems(settings: Settings) -> list[str]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    problems = [
        f"{name}: not a setting of identity" + (f" (did you mean {close}?)" if close else "")
        for name, close in settings.unknown_variables
    ]
    try:
        if not _ring(settings).keys:
            problems.append(f"IDENTITY_KEYS_DIR: no signing key in {settings.keys_dir}")
    except KeyFileError as error:
        problems.append(f"IDENTITY_KEYS_DIR: {error}")
    engine = create_engine(settings.database_url, pool_mode=settings.database_pool_mode)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
        head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
        if current != head:
            problems.append(
                f"IDENTITY_DATABASE_URL: at migration {current}, latest is {head}; "
                "run `identity migrate`"
            )
    except Exception as error:  # any failure to reach the database is the problem reported
        problems.append(f"IDENTITY_DATABASE_URL: database unreachable ({type(error).__name__})")
    finally:
        await engine.dispose()
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


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
