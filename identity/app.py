"""The application factory: `create_app(settings)` builds the whole service (docs/architecture.md).

Every collaborator is built here, once, and handed to the few objects that use it; nothing runs
at import time. Collaborators a test wants to replace (HTTP client, clock, mailer, tracer) are
keyword arguments.

Longer than most modules: it is the composition root, where every collaborator is built once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import cast

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from identity import __version__, environment, logs, tracing
from identity.accounts import housekeeping
from identity.accounts.delivery import Deliveries
from identity.accounts.grants import Grants
from identity.accounts.limits import Counter, FailureGuard
from identity.accounts.mail import Mailer
from identity.accounts.revocations import Revocations
from identity.accounts.rotation import Rotations
from identity.accounts.senders import from_settings
from identity.accounts.services import data_services
from identity.accounts.sign_in import SignIns
from identity.accounts.signals import Signals
from identity.clock import Clock
from identity.errors import IdentityError, MethodNotAllowed, NotFound, ServerError, render
from identity.metrics import Metrics
from identity.settings import ConfigError, Settings
from identity.store.database import Database
from identity.tokens import apple_revocation, id_tokens, providers
from identity.tokens.access_tokens import AccessTokens
from identity.tokens.provider_tokens import Sealer
from identity.tokens.signal_tokens import SignalVerifier
from identity.tokens.signing_keys import (
    DatabaseKeys,
    KeyFileError,
    KeyManager,
    key_source,
    token_lifetime,
)
from identity.tracing import NO_TRACING, Tracer
from identity.web import discovery, openapi
from identity.web.admin_endpoints import AdminEndpoints
from identity.web.bearer import Bearer
from identity.web.clients import ClientAuthenticator
from identity.web.failure_limit import FailureLimit
from identity.web.middleware import RequestContext
from identity.web.oauth_endpoints import OAuthEndpoints
from identity.web.public_endpoints import PublicEndpoints
from identity.web.signal_endpoints import SignalEndpoints
from identity.web.user_endpoints import UserEndpoints

logger = logging.getLogger("identity.app")


def create_app(
    settings: Settings,
    *,
    http_client: httpx.AsyncClient | None = None,
    clock: Clock | None = None,
    mailer: Mailer | None = None,
    tracer: Tracer = NO_TRACING,
    access_log: logs.AccessLog | None = None,
    key_reload_interval: float = housekeeping.KEY_RELOAD_INTERVAL,
    delivery_interval: float = 1.0,
) -> Starlette:
    """Build the service from `settings`; collaborators may be injected (tests do)."""
    clock = clock or time.time
    own_http = http_client is None
    http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
    database = Database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        pool_mode=settings.database_pool_mode,
        tracer=tracer,
    )
    source = key_source(settings, database, clock=clock)
    keys = KeyManager(
        source, lead=settings.key_publish_lead, token_lifetime=token_lifetime(settings), clock=clock
    )
    rotate = None
    if isinstance(source, DatabaseKeys):
        if settings.key_rotation_interval:
            interval = settings.key_rotation_interval
            rotate = lambda: source.rotate_if_due(interval)  # noqa: E731
    else:
        keys.load()  # a directory is read now; the database's rows once the loop runs
    metrics = Metrics(
        key_age=lambda: clock() - keys.view().active.created, multiprocess_dir=settings.metrics_dir
    )
    enabled = providers.configured(settings)
    # One key-set cache per provider, shared by its id_tokens and its security events.
    key_sets = id_tokens.key_sets(
        enabled,
        http,
        clock=clock,
        production=settings.production,
        on_fetch=lambda outcome: metrics.key_fetches.labels(outcome).inc(),
        tracer=tracer,
    )
    verifier = id_tokens.IdTokenVerifier(
        enabled,
        key_sets,
        clock=clock,
        leeway=settings.clock_skew,
        max_age=settings.id_token_max_age,
    )
    tokens = AccessTokens(
        keys,
        issuer=settings.issuer,
        audience=settings.access_audience,
        ttl=settings.access_token_ttl,
        leeway=settings.clock_skew,
        clock=clock,
    )
    sealer = Sealer(settings.token_encryption_keys)
    data = data_services(settings, database, mailer=mailer, clock=clock)
    sessions, users, verification, audit_log = (
        data.sessions,
        data.users,
        data.verification,
        data.audit_log,
    )
    grants = Grants(
        verifier=verifier,
        sign_ins=SignIns(database, data.notices),
        rotations=Rotations(database, data.notices),
        tokens=tokens,
        budget=Counter(settings.rate_limit_subject, clock=clock),
        policy=sessions.policy,
        metrics=metrics,
        clock=clock,
    )
    clients = ClientAuthenticator(settings.clients, settings.admin_clients)
    # IDENTITY_RATE_LIMIT_FAILURES: a step of each route it guards (the endpoint classes say which).
    limit = FailureLimit(FailureGuard(database, settings.rate_limit_failures, clock=clock))
    bearer = Bearer(tokens, sessions)
    public = PublicEndpoints(
        keys=keys,
        database=database,
        metrics=metrics,
        discovery=discovery.document(settings.issuer, client_auth=bool(settings.clients)),
        max_age=settings.jwks_max_age,
    )
    # Starlette tries routes in order: the hot ones (/token, the JWKS, /users/me) come first.
    routes = [
        *OAuthEndpoints(
            grants=grants,
            clients=clients,
            bearer=bearer,
            sessions=sessions,
            sealer=sealer,
            providers=frozenset(p.name for p in enabled),
            limit=limit,
            revocations=Revocations(database),
            clock=clock,
        ).routes(),
        *public.routes(),
        *UserEndpoints(
            bearer=bearer,
            sessions=sessions,
            users=users,
            verification=verification,
            verifier=verifier,
            limit=limit,
        ).routes(),
        *AdminEndpoints(
            admin=data.admin,
            audit_log=audit_log,
            clients=clients,
            limit=limit,
            notice_log=data.notice_log,
        ).routes(),
        *SignalEndpoints(
            verifier=SignalVerifier(
                enabled,
                key_sets,
                google_issuer=settings.google_risc_issuer,
                clock=clock,
                leeway=settings.clock_skew,
                max_age=settings.signal_max_age,
            ),
            signals=Signals(
                database,
                clock=clock,
                notices=data.notices,
                id_token_max_age=settings.id_token_max_age,
                leeway=settings.clock_skew,
            ),
            limit=limit,
            metrics=metrics,
        ).routes(),
    ]
    # Described from the routes themselves, itself included (a route without a description
    # stops the app here).
    routes.append(openapi.route(routes, issuer=settings.issuer, version=__version__))
    janitor = data.janitor
    # Its own client: notices go to the operator's receivers, never through an injected one.
    delivery_http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
    # Apple's revocations through the injected client: Apple is the operator's setting.
    apple = apple_revocation.from_settings(settings, http, sealer, clock=clock)
    senders = from_settings(settings, delivery_http, keys, clock, apple=apple)
    deliveries = Deliveries(database, senders, metrics, clock=clock, interval=delivery_interval)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if isinstance(source, DatabaseKeys):
            try:
                await _first_keys(source, keys)
            except BaseException:
                if own_http:
                    await http.aclose()
                await database.close()
                raise
        # A replica must see a new key well within its publish lead, before any replica signs
        # with it: at most a quarter of the lead between looks (30 s under the default lead).
        interval = min(key_reload_interval, max(1.0, settings.key_publish_lead / 4))
        task = asyncio.create_task(
            housekeeping.run(keys, janitor, sessions, key_interval=interval, rotate=rotate)
        )
        # Nothing to deliver without a destination (no notice is written then): no rounds.
        told = settings.webhooks or settings.backchannel_logout_uris or apple is not None
        worker = asyncio.create_task(deliveries.run() if told else asyncio.sleep(0))
        undo_hup = _on_sighup(lambda: _background(keys.refresh(force=True)))
        logger.info(
            "identity ready",
            extra={
                "event": {
                    "pid": os.getpid(),
                    "jwks_uri": f"{settings.issuer}/.well-known/jwks.json",
                    "discovery": f"{settings.issuer}/.well-known/openid-configuration",
                    "providers": [p.name for p in enabled],
                }
            },
        )
        try:
            yield
        finally:
            undo_hup()
            task.cancel()
            worker.cancel()
            await asyncio.gather(task, worker, return_exceptions=True)
            await delivery_http.aclose()
            # Close only what this factory opened.
            if own_http:
                await http.aclose()
            await database.close()

    def outer(app: ASGIApp) -> ASGIApp:
        return RequestContext(
            app,
            metrics=metrics,
            tracer=tracer,
            access=access_log,
            documents=public.documents(),
        )

    service = _Service(
        outer,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            IdentityError: _identity_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    service.state.deliveries = deliveries  # what `identity outbox` and tests drive
    return service


class _Service(Starlette):
    def __init__(self, outer: Callable[[ASGIApp], ASGIApp], **kwargs: object) -> None:
        self._outer = outer
        super().__init__(**kwargs)  # type: ignore[arg-type]
        # No trailing-slash redirect: it would answer with a Location built from the request's
        # Host, which a caller chooses (the /admin mount's router is built without it too).
        self.router.redirect_slashes = False

    def build_middleware_stack(self) -> ASGIApp:
        # Outside even Starlette's error middleware, so a 500 carries X-Request-ID and is
        # logged like every other request.
        return self._outer(super().build_middleware_stack())


async def _first_keys(source: DatabaseKeys, keys: KeyManager) -> None:
    """The database's keys before the first request: the first key made if there is none (one
    process of many makes it), then every key opened."""
    try:
        await source.ensure_first()
        await keys.start()
    except KeyFileError as error:
        # One line naming the variable or the row; the key itself is never in it.
        logger.critical("cannot start: %s", error)
        raise


_tasks: set[asyncio.Task[object]] = set()


def _background(work: Coroutine[object, None, object]) -> None:
    task: asyncio.Task[object] = asyncio.ensure_future(work)
    _tasks.add(task)  # held until done: the loop keeps only weak references
    task.add_done_callback(_tasks.discard)


def _on_sighup(reload: Callable[[], object]) -> Callable[[], None]:
    """Reload keys on SIGHUP; returns the undo. Only possible in a process's main thread."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or Windows
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


def _respond(error: IdentityError) -> Response:
    status, headers, body = render(error)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def _identity_error(request: Request, exc: Exception) -> Response:
    return _respond(cast(IdentityError, exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    status = cast(HTTPException, exc).status_code
    if status == 405:
        return _respond(MethodNotAllowed("this method is not allowed here"))
    return _respond(NotFound("no such endpoint"))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # The type goes to the log (without the message, which may echo input); the client
    # learns only that it failed.
    logger.error("unhandled error", extra={"event": {"error": type(exc).__name__}})
    return _respond(ServerError())


def app_from_environment() -> Starlette:
    """uvicorn's factory for `identity serve`: each worker reads the environment (and, in
    development, `.env`) and builds its own app."""
    try:
        settings = Settings.from_env(environment.load(os.environ, Path.cwd()))
        logs.lighten()
        tracer, provider = tracing.from_settings(settings.otlp_endpoint)
        if provider is not None:
            atexit.register(provider.shutdown)  # flush the last spans when the worker exits
        # The same format `identity serve` configured for uvicorn's and our other loggers.
        log_format = logs.resolve(settings.log_format, production=settings.production)
        app = create_app(settings, tracer=tracer, access_log=logs.AccessLog(direct=log_format))
        # The modules and the app live as long as the worker: out of the cyclic collector's
        # sight, its full collections no longer walk them (shorter pauses, a lower p99).
        gc.freeze()
        return app
    except (ConfigError, KeyFileError) as error:
        # One line, not a traceback; uvicorn's supervisor reads 3 as "cannot start".
        logger.critical("cannot start: %s", error)
        raise SystemExit(3) from None
