"""The application factory: `create_app(settings)` builds the whole service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import httpx
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from . import __version__
from .accounts import Accounts
from .clients import ClientAuthenticator
from .database import Database, create_engine
from .discovery import document as discovery_document
from .errors import IdentityError, TemporarilyUnavailable
from .grants import Grants
from .keys import KeyFileError, KeyManager, KeyStore
from .keyset import KeySetCache
from .limits import FailureGuard, RateLimiter
from .mail import LogMailer, Mailer, SmtpMailer
from .metrics import Metrics
from .middleware import RequestContext
from .openapi import document as openapi_document
from .profiles import Profiles
from .routes import routes
from .sealing import Sealer
from .sessions import Sessions
from .settings import ConfigError, Settings
from .tokens import TokenMinter
from .upstream import IdTokenVerifier, Provider
from .verification import EmailVerification

logger = logging.getLogger("identity.app")
Clock = Callable[[], float]
KEY_RELOAD_INTERVAL = 30.0
JANITOR_INTERVAL = 600.0


@dataclass
class Services:
    settings: Settings
    clock: Clock
    database: Database
    keys: KeyManager
    accounts: Accounts
    sessions: Sessions
    grants: Grants
    verification: EmailVerification
    profiles: Profiles
    sealer: Sealer
    metrics: Metrics
    limiter: RateLimiter
    clients: ClientAuthenticator
    discovery: bytes
    openapi: bytes


def create_app(
    settings: Settings,
    *,
    http_client: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
    mailer: Mailer | None = None,
    key_reload_interval: float = KEY_RELOAD_INTERVAL,
) -> Starlette:
    """Build the service from `settings`; collaborators may be injected (tests do)."""
    clock = clock or time.time
    own_http = http_client is None
    http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
    engine = create_engine(settings.database_url)
    database = Database(engine)
    keys = KeyManager(
        KeyStore(settings.keys_dir, passphrase=settings.keys_passphrase),
        lead=settings.key_publish_lead,
        token_lifetime=settings.access_token_ttl + settings.clock_skew,
        clock=clock,
    )
    keys.load()
    metrics = Metrics(
        key_age=lambda: clock() - keys.view().active.created,
        multiprocess_dir=settings.metrics_dir,
    )
    limiter = RateLimiter(clock=clock)
    sessions = Sessions(
        database,
        limiter=limiter,
        subject_limit=settings.rate_limit_subject,
        clock=clock,
        absolute_ttl=settings.refresh_token_ttl,
        idle_ttl=settings.refresh_idle_ttl,
    )
    accounts = Accounts(
        database, sessions, limiter=limiter, subject_limit=settings.rate_limit_subject, clock=clock
    )
    if mailer is None:
        mailer = SmtpMailer(settings.smtp_url) if settings.smtp_url else LogMailer()
    verification = EmailVerification(
        database,
        accounts,
        mailer=mailer,
        limiter=limiter,
        rate=settings.rate_limit_mail,
        sender=settings.mail_from,
        link_base=settings.verification_link_base,
        clock=clock,
    )
    provider = Provider.google(settings)
    verifier = IdTokenVerifier(
        provider,
        KeySetCache(
            provider.jwks_url,
            http,
            clock=clock,
            on_fetch=lambda outcome: metrics.key_fetches.labels(outcome).inc(),
        ),
        clock=clock,
        leeway=settings.clock_skew,
        max_age=settings.id_token_max_age,
    )
    minter = TokenMinter(
        issuer=settings.issuer, audience=settings.access_audience, ttl=settings.access_token_ttl
    )
    services = Services(
        settings=settings,
        clock=clock,
        database=database,
        keys=keys,
        accounts=accounts,
        sessions=sessions,
        grants=Grants(
            verifier=verifier,
            accounts=accounts,
            sessions=sessions,
            keys=keys,
            minter=minter,
            metrics=metrics,
            clock=clock,
        ),
        verification=verification,
        profiles=Profiles(database, accounts, verification, clock=clock),
        sealer=Sealer(settings.token_encryption_keys),
        metrics=metrics,
        limiter=limiter,
        clients=ClientAuthenticator(settings.clients),
        discovery=discovery_document(settings.issuer, bool(settings.clients)),
        openapi=openapi_document(settings.issuer, __version__),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not settings.clients:
            logger.warning("IDENTITY_CLIENTS is not set: /token accepts unauthenticated clients")
        if not settings.google_client_ids:
            logger.warning("IDENTITY_GOOGLE_CLIENT_IDS is not set: every exchange is refused")
        if not settings.smtp_url:
            logger.warning("IDENTITY_SMTP_URL is not set: verification mails go to this log")
        tasks = [asyncio.create_task(_housekeeping(services, key_reload_interval))]
        hup = _on_sighup(keys.reload)
        logger.info(
            "identity ready",
            extra={
                "event": {
                    "pid": os.getpid(),
                    "jwks_uri": f"{settings.issuer}/.well-known/jwks.json",
                    "discovery": f"{settings.issuer}/.well-known/openid-configuration",
                    "kids": list(keys.view().published),
                }
            },
        )
        try:
            yield
        finally:
            hup()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Close only what this factory opened.
            if own_http:
                await http.aclose()
            await engine.dispose()

    app = _Identity(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            IdentityError: _identity_error,
            HTTPException: _http_error,
            # A database that is down, restarting or unreachable: the client should retry.
            DBAPIError: _unavailable,
            PoolTimeout: _unavailable,
            ConnectionError: _unavailable,
            TimeoutError: _unavailable,
            Exception: _unexpected_error,
        },
    )
    app.state.services = services
    return app


class _Identity(Starlette):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside even Starlette's error middleware, so a 500 carries X-Request-ID and is
        # logged like every other request.
        s: Services = self.state.services
        guarded = FailureGuard(
            super().build_middleware_stack(),
            database=s.database,
            limiter=s.limiter,
            limit=s.settings.rate_limit_failures,
        )
        return RequestContext(guarded, metrics=s.metrics)


def _on_sighup(reload: Callable[[], bool]) -> Callable[[], None]:
    """Reload keys on SIGHUP; returns the undo. Only possible in a process's main thread."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (RuntimeError, ValueError, NotImplementedError):
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


async def _housekeeping(services: Services, key_reload_interval: float) -> None:
    """Notice key changes on disk; delete used id_tokens and sessions past their expiry."""
    last_janitor = 0.0
    while True:
        await asyncio.sleep(key_reload_interval)
        services.keys.reload_if_changed()
        if time.monotonic() - last_janitor >= JANITOR_INTERVAL:
            last_janitor = time.monotonic()
            try:
                await services.accounts.prune_used_id_tokens()
                await services.sessions.prune()
                async with services.database.transaction() as tx:
                    await services.limiter.prune(tx)
            except Exception:  # the database may be down; the next round tries again
                logger.warning("pruning expired rows failed", exc_info=True)


def _error_response(error: IdentityError) -> Response:
    headers = {"Cache-Control": "no-store", **error.headers()}
    body = {"error": error.error, "error_description": error.description}
    return JSONResponse(body, status_code=error.status, headers=headers)


async def _identity_error(request: Request, exc: Exception) -> Response:
    return _error_response(cast(IdentityError, exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    exc = cast(HTTPException, exc)
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = {"error": codes.get(exc.status_code, "invalid_request"), "error_description": exc.detail}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    logger.error("database unavailable", extra={"event": {"error": type(exc).__name__}})
    return _error_response(
        TemporarilyUnavailable("the service is temporarily unavailable", reason="database")
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # The type goes to the log (without the message, which may echo input); the client
    # learns only that it failed.
    logger.error("unhandled error", extra={"event": {"error": type(exc).__name__}})
    body = {"error": "server_error", "error_description": "internal error"}
    return JSONResponse(body, status_code=500)


def app_from_environment() -> Starlette:
    """uvicorn's factory for `identity serve` (each worker builds its own app)."""
    try:
        return create_app(Settings.from_env(os.environ))
    except (ConfigError, KeyFileError) as error:
        # One JSON line, not a traceback; uvicorn's supervisor reads 3 as "cannot start".
        logger.critical("cannot start: %s", error)
        raise SystemExit(3) from None
