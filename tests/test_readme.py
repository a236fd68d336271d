"""The documentation is the product's: its examples run, its code blocks are the tested files,
its tables name every setting and every route, its links lead somewhere, and the README's test
command is the one CI runs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from identity.app import create_app
from identity.settings import Settings
from identity.web import openapi

from .readme import DOCUMENTS, README, ROOT, example, excerpts, file_blocks
from .support import Live, node_jose

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", ["starlette", "fastapi"])
async def test_python_examples(live: Live, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ISSUER", live.url)
    monkeypatch.setenv("API_AUDIENCE", live.url)
    namespace: dict[str, Any] = {"__name__": f"docs_{name}"}
    exec(compile(example(name), f"docs:{name}", "exec"), namespace)  # noqa: S102 - our docs
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
    script = cache / "docs-example.mjs"
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

    def run(candidate: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["node", str(script), candidate],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=cache,
            env=env,
        )

    good = run(token)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["sub"]
    assert run(token[:-4] + "AAAA").returncode != 0


def test_file_blocks_are_the_tested_files() -> None:
    blocks = file_blocks()
    shown = {
        "tests/e2e/lib/auth.ts",
        "tests/e2e/lib/api/backend.ts",
        "tests/e2e/types.d.ts",
        "tests/e2e/authjs/types.d.ts",
        "tests/e2e/authjs/auth.ts",
        "tests/e2e/authjs/proxy.ts",
        "tests/e2e/authjs/app/api/backchannel-logout/route.ts",
        "tests/e2e/better-auth/lib/auth.ts",
        "tests/e2e/better-auth/lib/identity-plugin.ts",
        "tests/e2e/better-auth/lib/session.ts",
    }
    assert shown <= set(blocks), shown - set(blocks)
    for path, body in blocks.items():
        assert body == (ROOT / path).read_text(), f"the block for {path} differs from the file"


def test_the_app_router_demos_share_their_identity_code() -> None:
    # Each demo app is a project of its own; docs show each copy, and they stay one file.
    for name in ("identity.ts", "backchannel.ts"):
        authjs = (ROOT / "tests" / "e2e" / "authjs" / "lib" / name).read_text()
        assert authjs == (ROOT / "tests" / "e2e" / "better-auth" / "lib" / name).read_text(), name


def test_excerpts_are_verbatim_parts_of_the_tested_files() -> None:
    found = excerpts()
    assert found, "the README shows the NextAuth callback"
    for path, body in found:
        assert len(body.splitlines()) >= 10 and body in (ROOT / path).read_text(), path


def test_every_setting_is_documented() -> None:
    documented = set(
        re.findall(
            r"`((?:IDENTITY|OTEL|PROMETHEUS)_[A-Z_]+)`",
            (ROOT / "docs" / "configuration.md").read_text(),
        )
    )
    missing = sorted(Settings.variables() - documented)
    assert not missing, f"read by the code but not in docs/configuration.md: {missing}"


async def test_every_route_is_documented(settings: Settings) -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    app = create_app(settings)
    routes = {(route.method, path) for path, route in openapi.endpoints(app.routes)}
    assert len(routes) > 20
    missing = sorted(f"{m} {p}" for m, p in routes if f"{m} {p}" not in api)
    assert not missing, f"routes not described in docs/api.md: {missing}"


def test_links_between_documents_resolve() -> None:
    broken = []
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            if not (document.parent / target).exists():
                broken.append(f"{document.relative_to(ROOT)} -> {target}")
    assert not broken


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = README.read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", readme, re.DOTALL)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in Path(ROOT / ".ci" / "run").read_text()
    pinned = re.search(r'required-version = "==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned is not None and f"uv=={pinned.group(1)}" in test_command


def test_no_document_points_at_the_spec_outside_the_repository() -> None:
    marker = "SPEC " + "§"  # spelled apart, so this file does not find itself
    sources = [*DOCUMENTS]
    for folder, pattern in (("identity", "*.py"), ("migrations", "**/*.py"), ("tests", "*.py")):
        sources += (ROOT / folder).glob(pattern)
    sources += [ROOT / "tests" / "e2e" / "lib" / "auth.ts", ROOT / "bench" / "run.py"]
    for app in ("authjs", "better-auth"):
        sources += [
            path
            for path in (ROOT / "tests" / "e2e" / app).rglob("*.ts*")
            if not {"node_modules", ".next"}.intersection(path.parts)
        ]
    assert len(sources) > 60
    assert [str(p.relative_to(ROOT)) for p in sources if marker in p.read_text()] == []
