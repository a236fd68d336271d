"""The documentation is the product's: its examples run, its code blocks are the tested files,
its tables name every setting and every route, its links lead somewhere, and the README's test
command is the one CI runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from packaging.specifiers import SpecifierSet

from identity.app import create_app
from identity.settings import Settings
from identity.web import openapi

from .readme import DOCUMENTS, README, ROOT, example, excerpts, file_block, file_blocks
from .servers import free_port
from .support import Live, node_jose

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", ["starlette", "fastapi"])
async def test_python_examples(live: Live, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ISSUER", live.url)
    monkeypatch.setenv("API_AUDIENCE", live.url)
    monkeypatch.setenv("API_CLIENT_ID", "api")  # the live service is in open mode
    monkeypatch.setenv("API_CLIENT_SECRET", "any-secret-in-open-mode")
    namespace: dict[str, Any] = {"__name__": f"docs_{name}"}
    exec(compile(example(name), f"docs:{name}", "exec"), namespace)  # noqa: S102 - our docs
    namespace["verifier"].revocations.poll = 0
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
            # Its session ends: refused at the next poll (every request, here).
            async with httpx.AsyncClient() as service:
                ended = await service.post(
                    f"{live.url}/auth/logout", headers={"Authorization": f"Bearer {token}"}
                )
            assert ended.status_code == 204
            revoked = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
            assert revoked.status_code == 401
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
        "tests/e2e/pages/api/backchannel-logout.ts",
        "tests/e2e/better-auth/app/api/backchannel-logout/route.ts",
        "tests/e2e/better-auth/lib/auth.ts",
        "tests/e2e/better-auth/lib/identity-plugin.ts",
        "tests/e2e/better-auth/lib/session.ts",
    }
    assert shown <= set(blocks), shown - set(blocks)
    for path, body in blocks.items():
        assert body == (ROOT / path).read_text(), f"the block for {path} differs from the file"


def test_the_demos_share_their_identity_code() -> None:
    # Each demo app is a project of its own; docs show each copy, and they stay one file.
    for name in ("identity.ts", "backchannel.ts"):
        authjs = (ROOT / "tests" / "e2e" / "authjs" / "lib" / name).read_text()
        assert authjs == (ROOT / "tests" / "e2e" / "better-auth" / "lib" / name).read_text(), name
    # The NextAuth v4 demo checks and records a back-channel logout with the v5 demo's code.
    for name in ("backchannel.ts", "logged-out.ts"):
        authjs = (ROOT / "tests" / "e2e" / "authjs" / "lib" / name).read_text()
        assert authjs == (ROOT / "tests" / "e2e" / "lib" / name).read_text(), name


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


async def test_every_route_the_documents_name_exists(settings: Settings) -> None:
    """`PATCH /admin/users/{id}` in a page is a route the app has, with that method."""
    app = create_app(settings)
    templates = [
        (route.method, re.compile(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path))))
        for path, route in openapi.endpoints(app.routes)
    ]
    named = {
        (method, path)
        for document in DOCUMENTS
        for method, path in re.findall(
            r"`(GET|POST|PATCH|PUT|DELETE) (/[^`?\s]*)(?:[?\s][^`]*)?`", document.read_text()
        )
    }
    assert ("PATCH", "/admin/users/{id}") in named
    unknown = sorted(
        f"{method} {path}"
        for method, path in named
        # "…" stands for the rest of a path; "{any words}" for one segment.
        if not any(
            m == method
            and (
                pattern.fullmatch(re.sub(r"\{[^}]*\}", "x", path))
                or (path.endswith("…") and pattern.pattern.startswith(re.escape(path[:-1])))
            )
            for m, pattern in templates
        )
    )
    assert not unknown, f"the documents name routes the app does not have: {unknown}"


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
    ci = Path(ROOT / ".ci" / "run").read_text()
    assert test_command in ci
    # One uv pinned for reproducible runs (README, CI, Dockerfile), inside the range that
    # pyproject.toml allows and the README states.
    pins = {
        *re.findall(r"uv==([\d.]+)", test_command),
        *re.findall(r"^UV_VERSION=([\d.]+)$", ci, re.MULTILINE),
        *re.findall(r"uv==([\d.]+)", (ROOT / "Dockerfile").read_text()),
    }
    assert len(pins) == 1, pins
    allowed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["required-version"]
    assert SpecifierSet(allowed).contains(pins.pop())
    low, high = re.fullmatch(r">=([\d.]+),<([\d.]+)", allowed).groups()  # type: ignore[union-attr]
    assert f"any uv from {low} to before {high}" in " ".join(readme.split())


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_walk_through_runs_as_written(tmp_path: Path) -> None:
    """README "Try it by hand": the script, from a clean directory, on free ports."""
    assert file_block("scripts/try-it.sh") == (ROOT / "scripts" / "try-it.sh").read_text()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IDENTITY_")},
        "IDENTITY_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none",  # ignored
        "PYTHON": sys.executable,
        "TRY_PORT": str(free_port()),
        "TRY_FAKE_PORT": str(free_port()),
    }
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "try-it.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answers = [line for line in result.stdout.splitlines() if line and not line.startswith("== ")]
    assert [line.rsplit(" ", 2)[-1] for line in answers] == [
        "200)",
        "200)",
        "200)",
        "400)",
        "202)",
        "401)",
    ]
    tokens, me, jwks, replayed = (json.JSONDecoder().raw_decode(a)[0] for a in answers[:4])
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    assert me["email"] == "me@gmail.com" and me["id"] == tokens["user"]["id"]
    assert jwks["keys"][0]["kty"] == "RSA"
    assert replayed["error"] == "invalid_request"
    assert list(tmp_path.iterdir()) == []  # the scratch directory was its own, and is gone
    for port in (env["TRY_PORT"], env["TRY_FAKE_PORT"]):  # both servers were stopped
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


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
