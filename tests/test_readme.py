"""The README's verification examples, run against a live service."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import pytest

from .conftest import Live
from .readme import README, example, file_block
from .test_interop import node_jose

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", ["starlette", "fastapi"])
async def test_python_examples(live: Live, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ISSUER", live.url)
    monkeypatch.setenv("API_AUDIENCE", live.url)
    namespace: dict[str, Any] = {"__name__": f"readme_{name}"}
    exec(compile(example(name), f"README.md:{name}", "exec"), namespace)  # noqa: S102 - our README
    token = live.access_token()
    transport = httpx.ASGITransport(app=namespace["app"])
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            ok = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
            assert ok.json()["user_id"]
            for headers in (
                {},
                {"Authorization": "Bearer nope"},
                {"Authorization": f"Basic {token}"},
            ):
                refused = await client.get("/whoami", headers=headers)
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"].startswith("Bearer")
    finally:
        await namespace["verifier"].aclose()


def test_node_example(live: Live) -> None:
    cache = node_jose()
    script = cache / "readme-example.mjs"
    script.write_text(
        example("node")
        + "\nconsole.log(JSON.stringify(await verifyAccessToken(process.argv[2])));\n"
    )
    env = {
        "IDENTITY_ISSUER": live.url,
        "API_AUDIENCE": live.url,
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    token = live.access_token()
    result = subprocess.run(
        ["node", str(script), token],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cache,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sub"]
    bad = subprocess.run(
        ["node", str(script), token[:-4] + "AAAA"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cache,
        env=env,
    )
    assert bad.returncode != 0


@pytest.mark.parametrize("path", ["tests/e2e/lib/auth.ts", "tests/e2e/lib/api/backend.ts"])
def test_nextauth_code_in_readme_is_the_tested_code(path: str) -> None:
    assert file_block(path) == (README.parent / path).read_text()
