"""The verifier distribution (verifier/, `identity-exchange-verifier`) installed ALONE into a fresh
virtual environment: it verifies an access token the server minted, and none of the server's
packages can be imported there (docs/verifying.md, README "Dependencies and why")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest

from .fakes import FakeClock, FakeIssuer
from .support import ISSUER, exchange

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
SERVER_ONLY = ("identity", "sqlalchemy", "sqlmodel", "alembic", "asyncpg", "uvicorn", "joserfc")

# Run inside the fresh environment: the documents and the token come on standard input, served
# to TokenVerifier through httpx's MockTransport (the issuer is this test's in-process app).
SCRIPT = """
import asyncio, importlib.util, json, sys

import httpx
from identity_verifier import InvalidAccessToken, TokenVerifier

given = json.load(sys.stdin)

def serve(request):
    if request.url.path.endswith("/.well-known/openid-configuration"):
        return httpx.Response(200, json=given["discovery"])
    if str(request.url) == given["discovery"]["jwks_uri"]:
        return httpx.Response(200, json=given["jwks"])
    return httpx.Response(404)

async def main():
    http = httpx.AsyncClient(transport=httpx.MockTransport(serve))
    verifier = TokenVerifier(given["issuer"], given["issuer"], http_client=http,
                             clock=lambda: given["now"])
    claims = await verifier.verify(given["token"])
    try:
        await verifier.verify(given["token"][:-4] + "AAAA")
        refused = None
    except InvalidAccessToken as error:
        refused = error.reason
    present = [name for name in given["absent"] if importlib.util.find_spec(name) is not None]
    print(json.dumps({"subject": claims.subject, "email": claims.raw["email"],
                      "refused": refused, "present": present}))

asyncio.run(main())
"""


def uv() -> str | None:
    """The uv that runs this suite (`uv run` sets UV), else CI's or one on PATH."""
    for candidate in (os.environ.get("UV"), ROOT / ".tools" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment holding the verifier distribution and what it requires, nothing else."""
    tool = uv()
    if tool is None:
        pytest.skip("uv is not installed: cannot make a fresh environment for the verifier")
    venv = tmp_path_factory.mktemp("verifier-alone") / "venv"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    run = [tool]
    subprocess.run(
        [*run, "venv", "--quiet", "--python", sys.executable, str(venv)],
        check=True,
        env=environment,
    )
    python = venv / "bin" / "python"
    result = subprocess.run(
        [*run, "pip", "install", "--quiet", "--python", str(python), str(ROOT / "verifier")],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=300,
    )
    if result.returncode != 0 and "network" in result.stderr.lower():
        pytest.skip(f"the package index cannot be reached: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    return python


async def test_the_verifier_alone_verifies_a_token_the_server_minted(
    alone: Path, client: httpx.AsyncClient, google: FakeIssuer, clock: FakeClock
) -> None:
    token = (await exchange(client, google.mint())).json()["access_token"]
    discovery = (await client.get("/.well-known/openid-configuration")).json()
    jwks = (await client.get(discovery["jwks_uri"])).json()
    given = {
        "issuer": ISSUER,
        "discovery": discovery,
        "jwks": jwks,
        "token": token,
        "now": clock(),
        "absent": SERVER_ONLY,
    }
    run = partial(
        subprocess.run,
        [str(alone), "-c", SCRIPT],
        input=json.dumps(given),
        # Not the repository: `python -c` puts its working directory first on sys.path.
        cwd=alone.parent.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    result = await anyio.to_thread.run_sync(run)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout)
    assert outcome["email"] == "ada@gmail.com"
    assert outcome["subject"]
    assert outcome["refused"] == "bad_signature"
    assert outcome["present"] == []


def test_the_environment_holds_the_verifier_and_its_two_requirements_only(alone: Path) -> None:
    listed = subprocess.run(
        [str(alone), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:  # uv's venvs have no pip: read the metadata instead
        listed = subprocess.run(
            [
                str(alone),
                "-c",
                "import importlib.metadata as m, json;"
                "print(json.dumps([{'name': d.metadata['Name']} for d in m.distributions()]))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    names = {entry["name"].lower().replace("_", "-") for entry in json.loads(listed.stdout)}
    assert "identity-exchange-verifier" in names
    assert {"httpx", "cryptography"} <= names
    assert not names & {"identity-exchange", "sqlalchemy", "alembic", "asyncpg", "uvicorn"}
    assert "joserfc" not in names
