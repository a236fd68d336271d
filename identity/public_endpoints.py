"""Public documents and probes: JWKS, discovery, health, readiness, metrics, OpenAPI."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .database import Database
from .metrics import CONTENT_TYPE, Metrics
from .signing_keys import KeyManager


class PublicEndpoints:
    def __init__(
        self,
        *,
        keys: KeyManager,
        database: Database,
        metrics: Metrics,
        discovery: bytes,
        openapi: bytes,
        max_age: int,
    ) -> None:
        self._keys = keys
        self._db = database
        self._metrics = metrics
        self._discovery = discovery
        self._openapi = openapi
        self._cache = f"public, max-age={max_age}"

    def routes(self) -> list[Route]:
        return [
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/.well-known/openid-configuration", self.openid_configuration, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]

    async def jwks(self, request: Request) -> Response:
        view = self._keys.view()  # precomputed bytes and ETag, rebuilt only when keys change
        headers = {"Cache-Control": self._cache, "ETag": view.etag}
        if view.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return Response(view.jwks, media_type="application/json", headers=headers)

    async def openid_configuration(self, request: Request) -> Response:
        return Response(
            self._discovery, media_type="application/json", headers={"Cache-Control": self._cache}
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        reasons = []
        if not await self._db.ping():
            reasons.append("database unreachable")
        if not self._keys.ring.keys:
            reasons.append("no signing key loaded")
        if reasons:
            return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(self, request: Request) -> Response:
        body = self._metrics.render()
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    async def openapi(self, request: Request) -> Response:
        return Response(self._openapi, media_type="application/json")


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
