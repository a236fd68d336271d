"""The ASGI layer around the routes: `RequestContext`.

The request id (echoed when short and plain), the 64 KiB body cap, tokens in query strings
refused, one access-log line and the metrics per request, a trace span when tracing is on. It
sits outside Starlette's own error handling, so even a 500 carries X-Request-ID and is logged
like every other request; an exception that escapes the layers beneath it before an answer
started (Starlette's handlers never saw it) is answered here with the same JSON 500 body, never
the server's plain-text one. (The failure limit is a step of the routes it guards:
failure_limit.py.)
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from identity import tracing
from identity.errors import IdentityError, InvalidRequest, PayloadTooLarge, ServerError, render
from identity.logs import AccessLog
from identity.metrics import Metrics
from identity.tracing import NO_TRACING, Tracer

logger = logging.getLogger("identity.app")
MAX_BODY = 64 * 1024
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # fullmatch: a `$` lets "\n" in
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: str.isdigit() also passes "²", int() not
# A NUL or other C0 control in the decoded path: no route has one, and a database refuses it.
_PATH_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_QUERY_TOKENS = frozenset({"access_token", "subject_token", "refresh_token", "token"})
# The verification link carries a single-use mail token, not a credential (docs/api.md).
_QUERY_TOKEN_ALLOWED = frozenset({("GET", "/auth/verify-email")})
# A precomputed answer the middleware sends as it is: status, raw headers, body.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


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
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        tracer: Tracer = NO_TRACING,
        access: AccessLog | None = None,
        documents: Mapping[str, Callable[[str | None], Answer]] | None = None,
    ) -> None:
        self.app = app
        self._metrics = metrics
        self._tracer = tracer
        self._access = access or AccessLog()
        # GET and HEAD of the public documents (JWKS, discovery), answered here from bytes made
        # once: the most requested path of all never builds a Request or walks the routes.
        self._documents = documents or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        offered = _header(scope, b"x-request-id")
        # Echo a caller's id only when it is short and plain: it ends up in every log line.
        request_id = offered if offered and _REQUEST_ID.fullmatch(offered) else _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        # The status sent, the route when answered here, and whether an answer has started.
        outcome: list[Any] = [500, None, False]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome[0] = message["status"]
                outcome[2] = True
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            if self._tracer.enabled:
                await self._traced(scope, receive, send_with_id, request_id, outcome)
            else:
                await self._answer(scope, receive, send_with_id, outcome)
        except Exception as error:
            if outcome[2]:
                raise  # an answer is under way: the server can only close the connection
            # Raised outside Starlette's handlers (a failure-limit count on a database without
            # its tables, say): the type to the log, the usual JSON body to the client.
            logger.error("unhandled error", extra={"event": {"error": type(error).__name__}})
            await send_error(send_with_id, ServerError())
        finally:
            route = _route(scope, outcome)
            seconds = time.perf_counter() - started
            status = outcome[0]
            self._metrics.request(route, scope["method"], status, seconds)
            self._access(
                {
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "request_id": request_id,
                    "client_ip": (scope.get("client") or ("", 0))[0],
                }
            )

    async def _answer(self, scope: Scope, receive: Receive, send: Send, outcome: list[Any]) -> None:
        refusal = _refuse_early(scope)
        if refusal is not None:
            await send_error(send, refusal)
            return
        document = self._documents.get(scope["path"])
        if document is not None and scope["method"] in ("GET", "HEAD"):
            outcome[1] = scope["path"]
            status, headers, body = document(_header(scope, b"if-none-match"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, _limited(receive), send)

    async def _traced(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, outcome: list[Any]
    ) -> None:
        request_token = tracing.REQUEST_ID.set(request_id)
        parent = _trace_headers(scope)
        try:
            with self._tracer.span(
                "http.request", {"http.method": scope["method"]}, headers=parent
            ) as span:
                try:
                    await self._answer(scope, receive, send, outcome)
                finally:
                    span.set_attribute("http.route", _route(scope, outcome))
                    span.set_attribute("http.status_code", outcome[0])
        finally:
            tracing.REQUEST_ID.reset(request_token)


# Request ids: a random per-process prefix and a counter. Unique across workers and replicas
# (64 random bits, drawn again in a forked child), not secret (it is echoed to the caller), and
# far cheaper than 16 fresh random bytes per request.
class _RequestIds:
    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_new_request_id = _RequestIds()
os.register_at_fork(after_in_child=_new_request_id.reseed)


def _route(scope: Scope, outcome: list[Any]) -> str:
    # The route's template, never the raw path: bounded labels, no ids in logs.
    if outcome[1]:
        return str(outcome[1])
    route = scope.get("route")
    if not isinstance(route, Route):  # no route, or a mount none of whose routes matched
        return "(unmatched)"
    # A mounted route's template starts with its mount's path: the part of `root_path` the
    # mount added to the server's own.
    root = scope.get("root_path", "")
    return f"{root.removeprefix(scope.get('app_root_path', root))}{route.path}"


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
    if _PATH_CONTROLS.search(scope["path"]):
        return InvalidRequest("the path holds a control character")
    length = _header(scope, b"content-length")
    if length is not None:
        if not _DIGITS.fullmatch(length):
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
