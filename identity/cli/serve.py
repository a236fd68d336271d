"""`identity serve`: the service under uvicorn, one process or a supervisor and N workers
(docs/operations.md, "The command line").

Before anything is logged as ready, the address is bound here (a port in use is one line and
exit 1, not a "ready" followed by uvicorn's error), the first key is made and SQLite migrated in
development, each under a lock (two servers started at once make one key and migrate once).
Ctrl-C and SIGTERM are a graceful stop with exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging.config
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from identity import logs
from identity.settings import ConfigError, Settings
from identity.store import schema
from identity.tokens.signing_keys import KeyFileError

from .command import NOT_STARTED, OK, CommandError, command
from .keys import database_ready, in_database, store
from .protocol import CappedHttpToolsProtocol

log = logging.getLogger("identity.cli")


def add_parser(commands: Any) -> None:
    serve = command(commands, "serve", "run the service with uvicorn", run)
    serve.add_argument("--host", help="address to listen on (default: IDENTITY_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: IDENTITY_PORT, 8001)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes, each with its own event loop",
    )


def export_address(args: argparse.Namespace) -> None:
    """`--host/--port` become IDENTITY_HOST/IDENTITY_PORT, read here and by each worker, so the
    development issuer (and discovery, and mail links) names the port actually served."""
    if args.port is not None:
        if not 1 <= args.port <= 65_535:
            # uvicorn would take 99999 modulo 65536 and listen somewhere else.
            raise ConfigError(f"--port: must be between 1 and 65535 (got {args.port})")
        os.environ["IDENTITY_PORT"] = str(args.port)
    if args.host:
        os.environ["IDENTITY_HOST"] = args.host


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    log_format = logs.resolve(settings.log_format, production=settings.production)
    log_config = logs.config(log_format)
    logging.config.dictConfig(log_config)
    listener = _listen(settings.host, settings.port)
    _first_words(settings)
    _prepare(settings)
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
        # httptools with a cap on the header block (it has none of its own): protocol.py.
        http=CappedHttpToolsProtocol,
    )
    # Workers read the environment again: hand them the format chosen here (a worker's stderr
    # is this terminal or pipe too, but the choice must not differ between processes).
    os.environ["IDENTITY_LOG_FORMAT"] = log_format
    with _metrics_directory(args.workers):
        if args.workers > 1:
            supervisor = _Supervisor(config, sockets=[listener])
            supervisor.run()
            # A worker that could not start stops the supervisor (uvicorn's STARTUP_FAILURE).
            failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
            return NOT_STARTED if failed else OK
        server = uvicorn.Server(config)
        # uvicorn stops gracefully on SIGTERM and Ctrl-C (SIGINT), then re-raises the signal to
        # the handler that was there before it. That handler is this no-op, so the process exits
        # 0 (docs/operations.md); with Python's own, Ctrl-C ended in a KeyboardInterrupt.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: None)
        server.run(sockets=[listener])
        return OK if server.started else NOT_STARTED


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the app starts (uvicorn binds after its startup, so
    a port in use came after "identity ready")."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        hint = ""
        if error.errno == errno.EADDRINUSE:
            hint = " (another `identity serve`? Stop it, or pick another --port)"
        raise CommandError(
            f"cannot listen on {host}:{port}: {error.strerror or error}{hint}"
        ) from None
    listener.set_inheritable(True)  # the workers serve on it
    log.info(f"listening on http://{host}:{port} (Ctrl-C stops)")
    return listener


def _prepare(settings: Settings) -> None:
    if not settings.keys_in_database:
        _prepare_directory(settings)
    if settings.migrate_on_start:
        before, after = migrate_database(settings)
        if before != after:
            log.info(f"database migrated from {before or 'nothing'} to {after}")
    elif not settings.production:
        # PostgreSQL in development is not migrated by itself: say what to run, once.
        problem = asyncio.run(schema.diagnose(settings.database_url, settings.database_pool_mode))
        if problem:
            log.warning(f"IDENTITY_DATABASE_URL: {problem}")
    if settings.keys_in_database:
        # After migrating: the keys live in a table. The first key is made here, by one
        # process of all those starting (the database is shared, in production too).
        try:
            made = asyncio.run(in_database(settings, database_ready))
        except KeyFileError:
            raise
        except Exception as error:  # unreachable, or not migrated: one line, not a traceback
            problem = schema.unreachable(settings.database_url, error)
            raise CommandError(
                "IDENTITY_DATABASE_URL: cannot read the signing keys "
                f"({problem or type(error).__name__}; is the database migrated?)"
            ) from None
        if made is not None:
            log.info("generated a signing key in the database", extra={"event": {"kid": made.kid}})


def _prepare_directory(settings: Settings) -> None:
    keys = store(settings)
    if settings.production:
        if not keys.load():
            # Every replica would generate its own key: tokens would fail on the others.
            raise CommandError(
                f"IDENTITY_KEYS_DIR: {settings.keys_dir} holds no signing key; "
                "run `identity keys generate` once and share the directory"
            )
    else:
        key = keys.generate_first()
        if key is not None:
            log.info("generated a signing key", extra={"event": {"path": str(key.path)}})


def migrate_database(settings: Settings) -> tuple[str | None, str | None]:
    """Every pending migration (under a lock); the revisions before and after."""
    try:
        return schema.upgrade(settings.database_url, settings.database_pool_mode)
    except Exception as error:  # any failure to reach or migrate is one line
        problem = schema.unreachable(settings.database_url, error)
        raise CommandError(
            f"IDENTITY_DATABASE_URL: {problem or f'cannot migrate ({type(error).__name__})'}"
        ) from None


def _first_words(settings: Settings) -> None:
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


@contextlib.contextmanager
def _metrics_directory(workers: int) -> Iterator[None]:
    """Processes add up their metrics through files in PROMETHEUS_MULTIPROC_DIR. Each run gets
    a fresh private directory (inside the one given, if any), so neither a file of an earlier
    run nor anything else kept there is counted, or touched; it is removed at exit."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if workers == 1 and not given:
        yield  # one process, its own counters in memory
        return
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
    private = tempfile.mkdtemp(prefix="identity-metrics-", dir=given or None)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = private  # read by each worker's Settings
    try:
        yield
    finally:
        shutil.rmtree(private, ignore_errors=True)


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, except that SIGHUP re-reads keys instead of restarting,
    and that workers leave Ctrl-C to it: a worker starts with SIGINT blocked (a Ctrl-C reaches
    the whole process group, and one still importing would die with a traceback); the
    supervisor stops each worker with SIGTERM, gracefully."""

    def init_processes(self) -> None:
        with _sigint_held():
            super().init_processes()

    def keep_subprocess_alive(self) -> None:
        with _sigint_held():
            super().keep_subprocess_alive()

    def restart_all(self) -> None:
        with _sigint_held():
            super().restart_all()

    def handle_ttin(self) -> None:
        with _sigint_held():
            super().handle_ttin()

    def handle_hup(self) -> None:
        # Each worker reloads its keys on SIGHUP (see identity.app); nobody restarts. Only ready
        # workers are signalled: one still starting has no handler yet (SIGHUP would kill it),
        # and it reads the key directory itself when it builds its app.
        for process in self.processes:
            if process.pid is not None and process.is_ready(timeout=2):
                os.kill(process.pid, signal.SIGHUP)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    # A process started meanwhile inherits the blocked mask; here a Ctrl-C waits, it is not lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
