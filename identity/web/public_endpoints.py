"""Public documents and probes: JWKS, discovery, health, readiness, metrics (the OpenAPI
document is openapi.py's own route).

The JWKS and the discovery document are answered from bytes and headers made once (the JWKS's
again only when the keys change). `documents()` hands them to the request middleware, which
answers GET and HEAD of those paths itself; the routes here answer the same through Starlette
(they are what an unexpected method meets: 405).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from identity.metrics import CONTENT_TYPE, Metrics
from identity.store.database import Database
from identity.tokens.signing_keys import KeyManager, KeyView

from .middleware import Answer
from .routes import STRING, ApiRoute, Operation, obj

_STATUS = obj("status", status=STRING)


class PublicEndpoints:
    def __init__(
        self,
        *,
        keys: KeyManager,
        database: Database,
        metrics: Metrics,
        discovery: bytes,
        max_age: int,
    ) -> None:
        self._keys = keys
        self._db = database
        self._metrics = metrics
        self._discovery = discovery
        self._cache = f"public, max-age={max_age}".encode()
        self._discovery_answer: Answer = (200, self._headers(discovery), discovery)
        self._jwks_made: tuple[KeyView, Answer, Answer] | None = None

    def routes(self) -> list[BaseRoute]:
        keys = obj("keys", keys={"type": "array", "items": {"type": "object"}})
        discovery = obj(
            "issuer",
            "jwks_uri",
            "token_endpoint",
            issuer=STRING,
            jwks_uri=STRING,
            token_endpoint=STRING,
        )
        unready = obj(
            "status", "reasons", status=STRING, reasons={"type": "array", "items": STRING}
        )
        return [
            ApiRoute(
                "/.well-known/jwks.json",
                self.jwks,
                method="GET",
                operation=Operation("Our public signing keys", {200: keys, 304: None}),
            ),
            ApiRoute(
                "/.well-known/openid-configuration",
                self.openid_configuration,
                method="GET",
                operation=Operation("OpenID discovery", {200: discovery}),
            ),
            ApiRoute(
                "/healthz",
                self.healthz,
                method="GET",
                operation=Operation("Liveness", {200: _STATUS}),
            ),
            ApiRoute(
                "/readyz",
                self.readyz,
                method="GET",
                operation=Operation(
                    "Readiness",
                    {200: _STATUS, 503: unready},
                    notes={200: "Ready", 503: "Not ready"},
                ),
            ),
            ApiRoute(
                "/metrics",
                self.metrics,
                method="GET",
                operation=Operation("Prometheus metrics", {200: STRING}, media="text/plain"),
            ),
        ]

    def documents(self) -> dict[str, Callable[[str | None], Answer]]:
        return {
            "/.well-known/jwks.json": self.jwks_answer,
            "/.well-known/openid-configuration": lambda _: self._discovery_answer,
        }

    def jwks_answer(self, if_none_match: str | None) -> Answer:
        view = self._keys.view()  # precomputed bytes and ETag, rebuilt only when keys change
        made = self._jwks_made
        if made is None or made[0] is not view:
            etag = (b"etag", view.etag.encode())
            full = (200, [*self._headers(view.jwks), etag], view.jwks)
            made = self._jwks_made = (
                view,
                full,
                (304, [(b"cache-control", self._cache), etag], b""),
            )
        if if_none_match and view.etag in _etags(if_none_match):
            return made[2]
        return made[1]

    async def jwks(self, request: Request) -> Response:
        return _response(self.jwks_answer(request.headers.get("if-none-match")))

    async def openid_configuration(self, request: Request) -> Response:
        return _response(self._discovery_answer)

    def _headers(self, body: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", self._cache),
        ]

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        reasons = []
        if not await self._db.ping():
            reasons.append("database unreachable")
        else:
            try:
                async with asyncio.timeout(2.0):
                    unmigrated = await self._db.unmigrated()
            except Exception:  # readiness reports any failure as "not ready", never a 500
                unmigrated = "database schema unreadable"
            if unmigrated:
                reasons.append(unmigrated)
        if not self._keys.ring.keys:
            reasons.append("no signing key loaded")
        if reasons:
            return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(self, request: Request) -> Response:
        body = self._metrics.render()
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


def _response(answer: Answer) -> Response:
    status, headers, body = answer
    response = Response(body, status_code=status)
    response.raw_headers = list(headers)
    return response


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
