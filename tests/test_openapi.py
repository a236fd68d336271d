"""/openapi.json describes every endpoint; schemathesis fuzzes the running service against it.

Checks: no 5xx, every status code documented, every response matching its schema and content
type. Bounded examples keep it to well under a minute.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from .conftest import EXCHANGE
from .fakes import WEB_CLIENT, FakeGoogle, serve_jwks
from .servers import base_env, serve

pytestmark = pytest.mark.anyio


async def test_every_route_is_described(app: Starlette, client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    described = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert served == described
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], f"{method} {path} has no responses"


def test_schemathesis_finds_nothing(tmp_path: Path, google: FakeGoogle) -> None:
    st = shutil.which("st") or str(Path(sys.executable).parent / "st")
    if not Path(st).exists():
        pytest.skip("schemathesis is not installed")
    google.clock = time.time
    with serve_jwks(google) as jwks_url:
        env = base_env(
            IDENTITY_GOOGLE_JWKS_URL=jwks_url,
            IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
            IDENTITY_RATE_LIMIT_MAIL="0",
        )
        with serve(env, tmp_path) as server:
            # First everything but what ends the session, with a live access token; then the
            # operations that end it (logout, DELETE), with a second one.
            first = _run(
                st,
                server.url,
                google,
                tmp_path,
                "--exclude-path",
                "/auth/logout",
                "--exclude-method",
                "DELETE",
            )
            second = _run(
                st,
                server.url,
                google,
                tmp_path,
                "--include-path",
                "/auth/logout",
                "--include-method",
                "DELETE",
            )
            log = server.log_text()
    for result in (first, second):
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # The protected operations really ran signed in (in the second pass, the first logout or
    # delete ends the token for the rest, as it should).
    assert "Authentication failed" not in first.stdout, first.stdout[-3000:]
    assert "passed" in first.stdout
    assert "Traceback" not in log


def _run(
    st: str, url: str, google: FakeGoogle, cwd: Path, *selection: str
) -> subprocess.CompletedProcess[str]:
    now = int(time.time())
    token = httpx.post(
        url + "/token",
        data={
            **EXCHANGE,
            "subject_token": google.mint(iat=now, exp=now + 3600, email_verified=False),
        },
    ).json()["access_token"]
    return subprocess.run(
        [
            st,
            "run",
            url + "/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,"
            "content_type_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--header",
            f"Authorization: Bearer {token}",
            *selection,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
        env=base_env(NO_COLOR="1"),
    )
