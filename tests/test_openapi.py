"""/openapi.json describes every endpoint; schemathesis fuzzes the running service against it.

Checks: no 5xx, every status code documented, every response matching its schema and content
type. Three passes: signed in (Bearer) without what ends the session; what ends it; the admin
API with admin credentials. Bounded examples keep it to about a minute.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from identity.web import openapi
from identity.web.routes import ApiRoute, Operation

from .fakes import WEB_CLIENT, FakeIssuer, http_google, serve_issuers
from .servers import base_env, serve
from .support import EXCHANGE

pytestmark = pytest.mark.anyio
ADMIN_SECRET = "admin-secret-0123456789abc"
CLIENT_PATHS = "^/(token|revoke|introspect|revocations|auth/oauth/callback)$"
CLIENT_OR_ADMIN = "^/(token|revoke|introspect|revocations|auth/oauth/callback|admin.*)$"
APP_SECRET = "nextjs-secret-0123456789abc"


async def test_every_route_is_described(app: Starlette, client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    described = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set(_served(app.routes))
    assert any(path.startswith("/admin/") for path, _ in served)  # the mount was walked
    assert served == described
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], f"{method} {path} has no responses"
    # Schemas are the model family's, not hand-kept copies.
    assert {"UserPublic", "TokenResponse", "AdminUser", "AuditEventPublic", "ErrorBody"} <= set(
        doc["components"]["schemas"]
    )


def _served(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _served(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in (route.methods or set()) - {"HEAD"}:
                yield prefix + route.path.replace(":path}", "}"), method


async def _nothing(request: object) -> Response:
    return Response()


@pytest.mark.parametrize(
    "undescribed",
    [
        Route("/plain", _nothing, methods=["GET"]),
        Mount("/inner", routes=[Route("/plain", _nothing, methods=["GET"])]),
        Mount("/raw", app=Response()),  # an ASGI app: nothing to describe it by
    ],
)
def test_a_route_without_its_description_stops_the_document(undescribed: BaseRoute) -> None:
    described = ApiRoute("/ok", _nothing, method="GET", operation=Operation("OK", {204: None}))
    assert openapi.document([described], issuer="https://id.example", version="1")
    with pytest.raises(TypeError, match="has no operation"):
        openapi.document([described, undescribed], issuer="https://id.example", version="1")


async def test_request_bodies_are_their_models_with_their_limits(
    client_doc: dict[str, Any],
) -> None:
    schemas = client_doc["components"]["schemas"]
    token = client_doc["paths"]["/token"]["post"]["requestBody"]["content"]
    variants = token["application/x-www-form-urlencoded"]["schema"]["oneOf"]
    assert [v["$ref"].rsplit("/", 1)[1] for v in variants] == ["TokenExchangeBody", "RefreshBody"]
    exchange = schemas["TokenExchangeBody"]
    assert exchange["required"] == ["grant_type", "subject_token_type", "subject_token"]
    assert exchange["properties"]["subject_token"]["maxLength"] == 65_536
    assert exchange["properties"]["nonce"]["maxLength"] == 512
    callback = schemas["CallbackBody"]["properties"]
    assert callback["expires_at"]["anyOf"][0]["maximum"] == 2**63 - 1
    assert callback["token_type"]["maxLength"] == 64
    # A form field cannot be null: no null type, and no null default, in any request body.
    for name in ("TokenExchangeBody", "RefreshBody", "PresentedToken", "VerifyEmailBody"):
        for member in schemas[name]["properties"].values():
            assert member.get("type") == "string" or "const" in member, (name, member)
            assert "default" not in member, (name, member)


@pytest.fixture
async def client_doc(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def test_schemathesis_finds_nothing(tmp_path: Path, keys: dict[str, Any]) -> None:
    st = shutil.which("st") or str(Path(sys.executable).parent / "st")
    if not Path(st).exists():
        pytest.skip("schemathesis is not installed")
    with serve_issuers() as served:
        google = served.add(http_google(keys["google"], served.base))
        env = base_env(
            IDENTITY_GOOGLE_JWKS_URL=google.jwks_url,
            IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
            IDENTITY_RATE_LIMIT_MAIL="0",
            IDENTITY_CLIENTS=f"nextjs:{APP_SECRET},admin:{ADMIN_SECRET}",
            IDENTITY_ADMIN_CLIENTS="admin",
        )
        with serve(env, tmp_path) as server:
            user = _bearer(server.url, google)
            passes = {
                # Signed in, everything but what ends the session and what takes another scheme.
                "user": _run(
                    st,
                    server.url,
                    tmp_path,
                    user,
                    "--exclude-path-regex",
                    CLIENT_OR_ADMIN,
                    "--exclude-path",
                    "/auth/logout",
                    "--exclude-method",
                    "DELETE",
                ),
                # The client-authenticated endpoints, as the web app's server.
                "client": _run(
                    st,
                    server.url,
                    tmp_path,
                    _basic("nextjs", APP_SECRET),
                    "--include-path-regex",
                    CLIENT_PATHS,
                ),
                # The admin API, as the back office.
                "admin": _run(
                    st,
                    server.url,
                    tmp_path,
                    _basic("admin", ADMIN_SECRET),
                    "--include-path-regex",
                    "^/admin",
                ),
                # Last, what ends the user's session (the first one ends it for the rest).
                "ending": _run(
                    st,
                    server.url,
                    tmp_path,
                    user,
                    "--exclude-path-regex",
                    CLIENT_OR_ADMIN,
                    "--include-path",
                    "/auth/logout",
                    "--include-method",
                    "DELETE",
                ),
            }
            log = server.log_text()
    for name, result in passes.items():
        assert result.returncode == 0, name + result.stdout[-6000:] + result.stderr[-2000:]
        assert "passed" in result.stdout, name
    # The protected operations really ran authenticated.
    for name in ("user", "client", "admin"):
        assert "Authentication failed" not in passes[name].stdout, passes[name].stdout[-3000:]
    assert "Traceback" not in log


def _bearer(url: str, google: FakeIssuer) -> str:
    response = httpx.post(
        url + "/token",
        data={**EXCHANGE, "subject_token": google.mint(email_verified=False)},
        auth=("nextjs", APP_SECRET),
    )
    return f"Authorization: Bearer {response.json()['access_token']}"


def _basic(client_id: str, secret: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _run(
    st: str, url: str, cwd: Path, header: str, *selection: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            st,
            "run",
            url + "/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--header",
            header,
            *selection,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
        env=base_env(NO_COLOR="1"),
    )
