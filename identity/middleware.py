"""The outermost ASGI layer: request id, body cap, tokens in query strings, one log line."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import IdentityError, InvalidRequest, PayloadTooLarge
from .logs import ACCESS
from .metrics import Metrics

MAX_BODY = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUERY_TOKENS = frozenset({"access_token", "subject_token", "refresh_token", "token"})
# The verification link carries a single-use mail token, not a credential (SPEC §7.4).
_QUERY_TOKEN_ALLOWED = frozenset({("GET", "/auth/verify-email")})


def error_body(error: IdentityError) -> bytes:
    return json.dumps({"error": error.error, "error_description": error.description}).encode()


class RequestContext:
    def __init__(self, app: ASGIApp, *, metrics: Metrics | None = None) -> None:
        self.app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        offered = headers.get(b"x-request-id", b"").decode("latin-1")
        # Echo a caller's id only when it is short and plain: it ends up in every log line.
        request_id = offered if _REQUEST_ID.match(offered) else secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            refusal = _refuse_early(scope, headers)
            if refusal is not None:
                await send_error(send_with_id, refusal)
                return
            await self.app(scope, _limited(receive), send_with_id)
        finally:
            # The route's template, never the raw path: bounded label values, no ids in logs.
            route = getattr(scope.get("route"), "path", None) or "(unmatched)"
            seconds = time.perf_counter() - started
            if self._metrics is not None:
                self._metrics.request(route, scope["method"], status, seconds)
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


def _refuse_early(scope: Scope, headers: dict[bytes, bytes]) -> IdentityError | None:
    length = headers.get(b"content-length")
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


async def send_error(send: Any, error: IdentityError) -> None:
    body = error_body(error)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *((k.lower().encode(), v.encode()) for k, v in error.headers().items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
