"""The ASGI layers around the routes (outermost first).

`RequestContext`: the request id (echoed when short and plain), the 64 KiB body cap, tokens in
query strings refused, one access-log line and the metrics per request, a trace span when
tracing is on. It sits outside Starlette's own error handling, so even a 500 carries
X-Request-ID and is logged like every other request.

`FailureLimit`: IDENTITY_RATE_LIMIT_FAILURES on /token, /auth/*, /revoke and /introspect. It
hands the route an `Attempt` to fill in (who the request is about), refuses IP-keyed callers
that are past the limit before the route runs, and counts every 4xx answer (429s aside): when
that count passes the limit, the client gets the 429 instead of the answer it would have had.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import tracing
from .errors import IdentityError, InvalidRequest, PayloadTooLarge, render
from .limits import Attempt, FailureGuard, ip_key
from .metrics import Metrics
from .tracing import NO_TRACING, Tracer

ACCESS = logging.getLogger("identity.access")
MAX_BODY = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUERY_TOKENS = frozenset({"access_token", "subject_token", "refresh_token", "token"})
# The verification link carries a single-use mail token, not a credential (docs/api.md).
_QUERY_TOKEN_ALLOWED = frozenset({("GET", "/auth/verify-email")})
GUARDED = ("/token", "/auth/", "/revoke", "/introspect")
# Endpoints that authenticate clients: once a client authenticated, the key is (client, subject).
CLIENT_AUTHENTICATED = frozenset({"/token", "/auth/oauth/callback", "/revoke", "/introspect"})


async def send_error(send: Send, error: IdentityError) -> None:
    status, headers, body = render(error)
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestContext:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, tracer: Tracer = NO_TRACING) -> None:
        self.app = app
        self._metrics = metrics
        self._tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        offered = _header(scope, b"x-request-id")
        # Echo a caller's id only when it is short and plain: it ends up in every log line.
        request_id = offered if offered and _REQUEST_ID.match(offered) else secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        request_token = tracing.REQUEST_ID.set(request_id)
        parent = _trace_headers(scope) if self._tracer.enabled else None
        with self._tracer.span(
            "http.request", {"http.method": scope["method"]}, headers=parent
        ) as span:
            try:
                refusal = _refuse_early(scope)
                if refusal is not None:
                    await send_error(send_with_id, refusal)
                    return
                await self.app(scope, _limited(receive), send_with_id)
            finally:
                # The route's template, never the raw path: bounded labels, no ids in logs.
                route = getattr(scope.get("route"), "path", None) or "(unmatched)"
                seconds = time.perf_counter() - started
                self._metrics.request(route, scope["method"], status, seconds)
                span.set_attribute("http.route", route)
                span.set_attribute("http.status_code", status)
                ACCESS.info(
                    "request",
                    extra={
                        "event": {
                            "method": scope["method"],
                            "route": route,
                            "status": status,
                            "duration_ms": round(seconds * 1000, 2),
                            "request_id": request_id,
                            "client_ip": (scope.get("client") or ("", 0))[0],
                        }
                    },
                )
                tracing.REQUEST_ID.reset(request_token)


class FailureLimit:
    def __init__(self, app: ASGIApp, *, guard: FailureGuard, clients_required: bool) -> None:
        self.app = app
        self._guard = guard
        self._clients_required = clients_required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self._guard.enabled or not path.startswith(GUARDED):
            await self.app(scope, receive, send)
            return
        attempt = Attempt(ip_key((scope.get("client") or ("",))[0]))
        scope.setdefault("state", {})["attempt"] = attempt
        if not (self._clients_required and path in CLIENT_AUTHENTICATED):
            # Keyed by IP whatever happens: refuse before any work when it is past the limit.
            try:
                await self._guard.check(attempt.ip_key)
            except IdentityError as error:  # 429, or a 503 when the count cannot be read
                await send_error(send, error)
                return
        replaced = False

        async def counting(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start":
                status = message["status"]
                # Client errors count; our own failures (5xx) and the 429s themselves do not.
                if 400 <= status < 500 and status != 429:
                    refusal = await self._guard.fail(attempt.key())
                    if refusal is not None:
                        replaced = True
                        await send_error(send, refusal)
                        return
            elif replaced:
                return  # the body of the answer the 429 replaced
            await send(message)

        await self.app(scope, receive, counting)


def _trace_headers(scope: Scope) -> dict[str, str]:
    # Only the W3C trace context headers: nothing else of the request reaches the tracer.
    return {
        key.decode("latin-1"): value.decode("latin-1")
        for key, value in scope.get("headers", ())
        if key in (b"traceparent", b"tracestate")
    }


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _refuse_early(scope: Scope) -> IdentityError | None:
    length = _header(scope, b"content-length")
    if length is not None:
        if not length.isdigit():
            return InvalidRequest("malformed Content-Length")
        if int(length) > MAX_BODY:
            return PayloadTooLarge(f"the body exceeds {MAX_BODY} bytes")
    query = scope.get("query_string", b"")
    if query and (scope["method"], scope["path"]) not in _QUERY_TOKEN_ALLOWED:
        names = {name for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)}
        if names & _QUERY_TOKENS:
            # Query strings end up in proxy logs and browser history: tokens never go there.
            return InvalidRequest("tokens must not be sent in the query string")
    return None


def _limited(receive: Receive) -> Receive:
    total = 0

    async def receive_limited() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > MAX_BODY:
                raise PayloadTooLarge(f"the body exceeds {MAX_BODY} bytes")
        return message

    return receive_limited
