"""The `identity` command, run as a user would: real processes, real HTTP."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from alembic import command

from identity import __version__
from identity.accounts import audit
from identity.cli.command import FAILED, INTERRUPTED, NOT_STARTED, OK, USAGE
from identity.store.database import alembic_config, head_revision

from . import fakes
from .fakes import WEB_CLIENT, FakeIssuer, http_google, serve_issuers
from .readme import ROOT
from .servers import base_env, free_port, run_cli, serve, wait_until_ok
from .support import EXCHANGE, Sql, exchange, sign_in

# The newest migration: what a migrated database is at.
HEAD = head_revision()

pytestmark = pytest.mark.anyio
STRONG = "3f9a1c7e52b84d06a9e1f2c3b4d5e6f708192a3b4c5d6e7f"  # as `openssl rand -hex 24` prints


def test_bad_configuration_is_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", env=base_env(IDENTITY_ACCESS_TOKEN_TTL="soon"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "identity: IDENTITY_ACCESS_TOKEN_TTL: must be a whole number (got 'soon')"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "check"])
def test_every_production_problem_at_once(tmp_path: Path, command: str) -> None:
    """An empty production environment: one line per problem, one run, exit 2."""
    result = run_cli(command, env=base_env(IDENTITY_ENV="production"), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == [
        "IDENTITY_ISSUER",
        "IDENTITY_GOOGLE_CLIENT_IDS",
        "IDENTITY_CLIENTS",
        "IDENTITY_SMTP_URL",
    ]
    assert all(line.startswith("identity: ") for line in lines)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "check"])
def test_production_refuses_plain_smtp_and_weak_secrets(tmp_path: Path, command: str) -> None:
    weak = "my-placeholder-secret-for-the-backoffice"
    env = base_env(
        IDENTITY_ENV="production",
        IDENTITY_ISSUER="https://id.example.com",
        IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
        IDENTITY_CLIENTS=f"nextjs:{STRONG},backoffice:{weak}",
        IDENTITY_SMTP_URL="smtp://mailer:hunter2hunter2@mail.example.com:587",
    )
    result = run_cli(command, env=env, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("identity: IDENTITY_CLIENTS: the secret of 'backoffice' is too weak")
    assert lines[1].startswith("identity: IDENTITY_SMTP_URL: must use TLS in production")
    assert weak not in result.stderr and "hunter2" not in result.stderr


def test_a_bad_value_from_dotenv_says_so(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("IDENTITY_PORT=99999\n")
    result = run_cli("check", env=base_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "identity: IDENTITY_PORT (from .env): must be between 1 and 65535 (got 99999)"
    ]


def test_serve_refuses_a_port_out_of_range(tmp_path: Path) -> None:
    for port in ("99999", "0"):
        result = run_cli("serve", "--port", port, env=base_env(), cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"identity: --port: must be between 1 and 65535 (got {port})"
        ]
    assert not (tmp_path / "keys").exists()  # refused before anything was done


def test_the_issuer_follows_the_port_served(tmp_path: Path) -> None:
    """`serve --port N` in development: the workers' issuer, discovery and links name N."""
    port = free_port()
    # The flag wins over the variable (here an address the process must not take).
    env = base_env(IDENTITY_PORT=str(free_port()))
    with (tmp_path / "server.log").open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "identity", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ok(base + "/readyz", process=process)
        for _ in range(4):  # whichever worker answers
            document = httpx.get(base + "/.well-known/openid-configuration").json()
            assert document["issuer"] == base
            assert document["jwks_uri"] == base + "/.well-known/jwks.json"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_production_refuses_to_generate_a_key(tmp_path: Path) -> None:
    env = base_env(
        IDENTITY_ENV="production",
        IDENTITY_ISSUER="https://id.example.com",
        IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
        IDENTITY_CLIENTS=f"nextjs:{STRONG}",
        IDENTITY_SMTP_URL="off",
    )
    result = run_cli("serve", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "IDENTITY_KEYS_DIR" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "keys").exists() or not list((tmp_path / "keys").iterdir())


def test_keys_generate_list_and_bad_file(tmp_path: Path) -> None:
    env = base_env()
    assert run_cli("keys", "generate", env=env, cwd=tmp_path).returncode == 0
    assert "already has a key" in run_cli("keys", "generate", env=env, cwd=tmp_path).stdout
    assert len(list((tmp_path / "keys").glob("rsa-*.pem"))) == 1
    lines = run_cli("keys", "list", env=env, cwd=tmp_path).stdout.splitlines()
    assert lines[0].split() == ["KID", "STATE", "CREATED", "ACTIVATES", "RETIRES"]
    assert " active " in lines[1]
    key_file = next((tmp_path / "keys").glob("rsa-*.pem"))
    key_file.write_text("garbage")
    broken = run_cli("keys", "list", env=env, cwd=tmp_path)
    assert broken.returncode == 1
    assert key_file.name in broken.stderr


def test_migrate_says_what_it_applied(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/x.db"
    env = base_env(IDENTITY_DATABASE_URL=url)
    result = run_cli("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.db").exists()
    assert result.stdout == f"identity: database migrated from nothing (empty) to {HEAD}\n"
    again = run_cli("migrate", env=env, cwd=tmp_path)
    assert again.stdout == f"identity: database already at the latest migration ({HEAD})\n"
    command.downgrade(alembic_config(url), "0003")
    assert run_cli("migrate", env=env, cwd=tmp_path).stdout == (
        f"identity: database migrated from 0003 to {HEAD}\n"
    )


def test_migrate_on_postgresql_says_so_too(database_url: str, tmp_path: Path) -> None:
    result = run_cli("migrate", env=base_env(IDENTITY_DATABASE_URL=database_url), cwd=tmp_path)
    assert result.stdout == f"identity: database already at the latest migration ({HEAD})\n"


def test_help_version_and_the_bare_command() -> None:
    bare = run_cli(env=base_env(), cwd=Path.cwd())
    assert bare.returncode == 0
    assert bare.stdout.startswith("usage: identity")
    for name in ("serve", "migrate", "check", "prune", "keys", "users", "events"):
        assert f"    {name} " in bare.stdout
    assert (
        run_cli("--version", env=base_env(), cwd=Path.cwd()).stdout == f"identity {__version__}\n"
    )
    keys = run_cli("keys", env=base_env(), cwd=Path.cwd())
    assert keys.returncode == 0 and "rotate" in keys.stdout
    serve_help = " ".join(run_cli("serve", "--help", env=base_env(), cwd=Path.cwd()).stdout.split())
    assert "--workers N worker processes, each with its own event loop (default: 1)" in serve_help
    assert "(default: IDENTITY_PORT, 8001)" in serve_help
    listing = " ".join(
        run_cli("users", "list", "--help", env=base_env(), cwd=Path.cwd()).stdout.split()
    )
    assert "at most this many (1-200) (default: 50)" in listing
    events = " ".join(run_cli("events", "--help", env=base_env(), cwd=Path.cwd()).stdout.split())
    assert "refresh_reuse" in events and "user_disabled" in events


def test_an_unknown_event_type_is_answered_with_the_list(tmp_path: Path) -> None:
    result = run_cli("events", "--type", "refresh_reuse_detected", env=base_env(), cwd=tmp_path)
    assert result.returncode == 2
    first, hint = result.stderr.strip().splitlines()
    assert first.startswith("identity events: argument --type: invalid choice")
    assert all(f"'{t}'" in first for t in audit.TYPES)
    assert hint == "Try 'identity events --help'."


def test_exit_codes_are_the_documented_ones(tmp_path: Path) -> None:
    """docs/operations.md's table is the code's: each status, and a command that gets it."""
    documented = re.findall(r"^\| `(\d+)` \|", (ROOT / "docs" / "operations.md").read_text(), re.M)
    assert [int(code) for code in documented] == [0, 1, 2, 3, 130]
    assert (OK, FAILED, USAGE, NOT_STARTED, INTERRUPTED) == (0, 1, 2, 3, 130)
    env = base_env(IDENTITY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/x.db")
    assert run_cli("migrate", env=env, cwd=tmp_path).returncode == OK
    assert run_cli("users", "show", "nobody", env=env, cwd=tmp_path).returncode == FAILED
    assert run_cli("users", "--nope", env=env, cwd=tmp_path).returncode == USAGE
    bad = {**env, "IDENTITY_ACCESS_TOKEN_TTL": "soon"}
    assert run_cli("users", "list", env=bad, cwd=tmp_path).returncode == USAGE


def test_zero_config_serve_end_to_end(tmp_path: Path, keys: dict[str, Any]) -> None:
    """The README's run command: key generated, SQLite migrated, exchange and /users/me work."""
    with serve_issuers() as served:
        google = served.add(http_google(keys["google"], served.base))
        env = base_env(
            IDENTITY_GOOGLE_JWKS_URL=google.jwks_url, IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT
        )
        with serve(env, tmp_path) as server:
            assert list((tmp_path / "keys").glob("rsa-*.pem"))
            assert (tmp_path / "identity.db").exists()
            token = google.mint()
            response = httpx.post(server.url + "/token", data={**EXCHANGE, "subject_token": token})
            assert response.status_code == 200, response.text
            access = response.json()["access_token"]
            me = httpx.get(server.url + "/users/me", headers={"Authorization": f"Bearer {access}"})
            assert me.json()["email"] == "ada@gmail.com"
            # A downstream service given only the JWKS URL verifies the token (PyJWT).
            signing_key = jwt.PyJWKClient(
                server.url + "/.well-known/jwks.json"
            ).get_signing_key_from_jwt(access)
            # The issuer, and so the audience, is the address served (no IDENTITY_ISSUER set).
            claims = jwt.decode(access, signing_key.key, algorithms=["RS256"], audience=server.url)
            assert claims["sub"] == me.json()["id"]
            log = server.log_text()
        for line in log.splitlines():
            json.loads(line)  # piped, every line the process wrote is JSON, uvicorn's included
        assert token not in log and access not in log
        assert response.json()["refresh_token"] not in log
        assert "jwks.json" in log and "openid-configuration" in log


def test_on_a_terminal_the_first_lines_say_what_is_missing(tmp_path: Path) -> None:
    """Text on a terminal, naming what to set for a first sign-in, with an example."""
    port = free_port()
    env = base_env(IDENTITY_PORT=str(port), IDENTITY_GOOGLE_CLIENT_ID="typo")
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "identity", "serve"],
        env=env,
        cwd=tmp_path,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while b"identity ready" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(controller, 65536)
                except OSError:
                    break
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        os.close(controller)
    text = seen.decode(errors="replace")
    assert "identity ready" in text
    assert not text.lstrip().startswith("{")  # not JSON on a terminal
    assert "IDENTITY_GOOGLE_CLIENT_ID is not a setting of identity" in text
    assert "did you mean IDENTITY_GOOGLE_CLIENT_IDS?" in text
    assert "IDENTITY_GOOGLE_CLIENT_IDS=1234-abc.apps.googleusercontent.com" in text
    assert "IDENTITY_CLIENTS=nextjs:" in text


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_sees_the_documents(tmp_path: Path) -> None:
    with serve(base_env(), tmp_path) as server:
        out = subprocess.run(
            ["curl", "-sf", server.url + "/.well-known/jwks.json"], capture_output=True, check=True
        )
        assert json.loads(out.stdout)["keys"]


def test_rotate_if_older_than_bits_and_passphrase(tmp_path: Path) -> None:
    env = base_env(IDENTITY_KEYS_PASSPHRASE="correct horse battery")
    assert run_cli("keys", "generate", env=env, cwd=tmp_path).returncode == 0
    skipped = run_cli("keys", "rotate", "--if-older-than", "30d", env=env, cwd=tmp_path)
    assert skipped.returncode == 0
    assert "nothing done" in skipped.stdout
    rotated = run_cli("keys", "rotate", "--bits", "3072", env=env, cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert "signs from" in rotated.stdout
    files = sorted((tmp_path / "keys").glob("rsa-*.pem"))
    assert len(files) == 2
    assert all(f.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") for f in files)
    states = [
        line.split()[1]
        for line in run_cli("keys", "list", env=env, cwd=tmp_path).stdout.splitlines()[1:]
    ]
    assert states == ["active", "next"]
    bad = run_cli("keys", "rotate", "--if-older-than", "soon", env=env, cwd=tmp_path)
    assert bad.returncode == 1
    assert "--if-older-than" in bad.stderr
    wrong = run_cli("keys", "list", env={**env, "IDENTITY_KEYS_PASSPHRASE": "wrong"}, cwd=tmp_path)
    assert wrong.returncode == 1
    assert "wrong passphrase" in wrong.stderr
    small = run_cli("keys", "rotate", "--bits", "1024", env=env, cwd=tmp_path)
    assert small.returncode == 1
    assert "2048" in small.stderr


def test_rotating_twice_warns_about_the_queued_key(tmp_path: Path) -> None:
    env = base_env()
    assert run_cli("keys", "generate", env=env, cwd=tmp_path).returncode == 0
    first = run_cli("keys", "rotate", env=env, cwd=tmp_path)
    assert first.returncode == 0 and first.stderr == ""
    queued = run_cli("keys", "list", env=env, cwd=tmp_path).stdout.splitlines()[2].split()[0]
    second = run_cli("keys", "rotate", env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "signs from" in second.stdout
    (warning,) = second.stderr.splitlines()
    assert warning.startswith(f"identity: warning: key {queued} was already queued (next, ")
    assert "it now signs only until" in warning
    states = [
        line.split()[1]
        for line in run_cli("keys", "list", env=env, cwd=tmp_path).stdout.splitlines()[1:]
    ]
    assert states == ["active", "next", "next"]


def test_rotate_skips_dangling_and_unreadable_files_and_names_them(tmp_path: Path) -> None:
    env = base_env()
    assert run_cli("keys", "generate", env=env, cwd=tmp_path).returncode == 0
    keys_dir = tmp_path / "keys"
    dangling = keys_dir / "rsa-20200101T000000Z.pem"
    dangling.symlink_to(tmp_path / "gone.pem")
    # A key-named entry that cannot be read as a file (for root too, unlike chmod 000).
    unreadable = keys_dir / "rsa-20210101T000000Z.pem"
    unreadable.mkdir()
    result = run_cli("keys", "rotate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    skipped = result.stderr.splitlines()
    assert len(skipped) == 2
    assert skipped == [
        f"identity: skipped keys/{dangling.name}: FileNotFoundError",
        f"identity: skipped keys/{unreadable.name}: not a regular file",
    ]
    assert "added" in result.stdout
    assert len([p for p in keys_dir.glob("rsa-*.pem") if p.is_file()]) == 2
    if os.geteuid() != 0:  # root reads any file whatever its mode
        unreadable.rmdir()
        unreadable.write_text("x")
        unreadable.chmod(0o000)
        again = run_cli("keys", "rotate", env=env, cwd=tmp_path)
        assert again.returncode == 0
        assert f"identity: skipped keys/{unreadable.name}: PermissionError" in again.stderr


def test_open_key_file_is_refused_with_its_name(tmp_path: Path) -> None:
    env = base_env()
    run_cli("keys", "generate", env=env, cwd=tmp_path)
    key_file = next((tmp_path / "keys").glob("rsa-*.pem"))
    key_file.chmod(0o644)
    result = run_cli("serve", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert key_file.name in result.stderr
    assert "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_finishes_in_flight_requests(tmp_path: Path, keys: dict[str, Any]) -> None:
    with serve_issuers(delay=2.0) as served:
        google = served.add(http_google(keys["google"], served.base))
        token = google.mint()
        env = base_env(
            IDENTITY_GOOGLE_JWKS_URL=google.jwks_url, IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT
        )
        with serve(env, tmp_path) as server:
            answers: list[httpx.Response] = []

            def post() -> None:
                answers.append(
                    httpx.post(
                        server.url + "/token", data={**EXCHANGE, "subject_token": token}, timeout=30
                    )
                )

            worker = threading.Thread(target=post)
            worker.start()
            time.sleep(0.7)  # the exchange is now waiting for the provider's keys
            server.process.send_signal(signal.SIGTERM)
            worker.join(timeout=30)
            assert server.process.wait(timeout=30) == 0
    assert answers[0].status_code == 200


def test_check_reports_problems(tmp_path: Path) -> None:
    env = base_env(
        IDENTITY_DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        IDENTITY_GOOGLE_CLIENT_IDS_TYPO="x",
        IDENTITY_APPLE_CLIENT_IDS="com.example.web",
        IDENTITY_APPLE_JWKS_URL="http://127.0.0.1:1/keys",
    )
    result = run_cli("check", env=env, cwd=tmp_path)
    assert result.returncode == 1
    problems = result.stderr
    assert "IDENTITY_KEYS_DIR: no signing key" in problems
    assert "IDENTITY_DATABASE_URL: database unreachable" in problems
    assert "apple: no usable keys at http://127.0.0.1:1/keys" in problems
    assert (
        "IDENTITY_GOOGLE_CLIENT_IDS_TYPO: not a setting of identity "
        "(did you mean IDENTITY_GOOGLE_CLIENT_IDS?)" in problems
    )
    assert "Traceback" not in problems
    assert "apple: live at POST" in result.stdout
    assert "apple: token revocation off (set IDENTITY_APPLE_TEAM_ID" in result.stdout
    bare = run_cli("check", env=base_env(), cwd=tmp_path)
    assert "no provider is configured" in bare.stderr
    assert "google: off (IDENTITY_GOOGLE_CLIENT_IDS is unset)" in bare.stdout


def test_check_fetches_every_providers_keys(tmp_path: Path, keys: dict[str, Any]) -> None:
    with serve_issuers() as served:
        google = served.add(http_google(keys["google"], served.base))
        microsoft = served.add(fakes.http_microsoft(keys["microsoft"], served.base))
        env = base_env(
            IDENTITY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/ok.db",
            IDENTITY_GOOGLE_JWKS_URL=google.jwks_url,
            IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
            IDENTITY_MICROSOFT_CLIENT_IDS=fakes.MS_CLIENT,
            IDENTITY_MICROSOFT_TENANTS="organizations",
            IDENTITY_MICROSOFT_AUTHORITY=f"{served.base}/ms",
        )
        run_cli("keys", "generate", env=env, cwd=tmp_path)
        stale = run_cli("check", env=env, cwd=tmp_path)
        assert stale.returncode == 1
        assert "run `identity migrate`" in stale.stderr
        assert run_cli("migrate", env=env, cwd=tmp_path).returncode == 0
        result = run_cli("check", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "fine" in result.stdout
        assert microsoft.fetches == google.fetches == 2
        # Which receivers of security events are live, and what to register.
        assert "google: live at POST http://127.0.0.1:8001/signals/google" in result.stdout
        assert "apple: off (IDENTITY_APPLE_CLIENT_IDS is unset)" in result.stdout


# -- the back office, straight on the database --------------------------------------------------


def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return base_env(IDENTITY_DATABASE_URL=database_url, IDENTITY_KEYS_DIR=str(tmp_path / "keys"))


async def test_users_and_events_commands(
    client: httpx.AsyncClient,
    google: FakeIssuer,
    clock: fakes.FakeClock,
    database_url: str,
    tmp_path: Path,
    sql: Sql,
) -> None:
    ada = (await sign_in(client, google))["user"]
    clock.advance(1)
    await sign_in(client, google, sub="grace", email="grace@gmail.com", name="Grace Hopper")
    env = cli_env(database_url, tmp_path)

    listing = run_cli("users", "list", env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split()[:3] == ["ID", "EMAIL", "VERIFIED"]
    assert [r.split()[1] for r in rows] == ["grace@gmail.com", "ada@gmail.com"]
    as_json = json.loads(
        run_cli("users", "list", "--email", "ada@gmail.com", "--json", env=env, cwd=tmp_path).stdout
    )
    assert [u["id"] for u in as_json["users"]] == [ada["id"]]

    shown = run_cli("users", "show", ada["id"], env=env, cwd=tmp_path)
    assert "ada@gmail.com" in shown.stdout and "google" in shown.stdout
    # The address does as well as the id, whatever its case.
    assert run_cli("users", "show", "Ada@Gmail.com", env=env, cwd=tmp_path).stdout == shown.stdout

    disabled = run_cli("users", "disable", "ada@gmail.com", "--json", env=env, cwd=tmp_path)
    assert disabled.returncode == 0, disabled.stderr
    assert json.loads(disabled.stdout)["disabled_at"]
    assert (await exchange(client, google.mint())).status_code == 403
    assert run_cli("users", "enable", ada["id"], env=env, cwd=tmp_path).returncode == 0
    assert (await exchange(client, google.mint())).status_code == 200
    revoked = run_cli("users", "revoke-sessions", ada["id"], env=env, cwd=tmp_path)
    assert revoked.stdout.strip() == "identity: 1 session(s) ended"

    events = run_cli(
        "events", "--user", ada["id"], "--since", "24h", "--json", env=env, cwd=tmp_path
    )
    types = [e["type"] for e in json.loads(events.stdout)]
    assert types[:3] == ["sessions_revoked", "sign_in", "user_enabled"]
    cli_event = next(e for e in json.loads(events.stdout) if e["type"] == "user_disabled")
    assert cli_event["client_id"] == "cli" and cli_event["detail"]["by"] == "cli"
    table = run_cli("events", "--type", "sign_in", env=env, cwd=tmp_path)
    assert table.stdout.splitlines()[0].split() == [
        "ID",
        "TIME",
        "TYPE",
        "USER",
        "CLIENT",
        "DETAIL",
    ]

    assert run_cli("users", "delete", ada["id"], env=env, cwd=tmp_path).returncode == 0
    assert await sql.scalar("SELECT count(*) FROM users WHERE id = :id", id=ada["id"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("users", "show", "nobody"), "identity: no such user"),
        (("users", "disable", "nobody"), "identity: no such user"),
        (("users", "delete", "nobody"), "identity: no such user"),
        (("users", "list", "--limit", "0"), "identity: limit: must be between 1 and 200"),
        (("events", "--since", "yesterday"), "identity: --since: 'yesterday': use a number"),
        (("users", "show", "nobody@example.com"), "identity: no user has this address"),
    ],
)
def test_a_bad_id_or_argument_is_one_line(
    database_url: str, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = run_cli(*args, env=cli_env(database_url, tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


async def test_prune_does_the_janitors_work_once(
    client: httpx.AsyncClient, google: FakeIssuer, database_url: str, tmp_path: Path, sql: Sql
) -> None:
    await sign_in(client, google)  # the fake clock is in 2027: everything is in the future
    env = cli_env(database_url, tmp_path)
    result = run_cli("prune", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == {
        "used_id_tokens",
        "received_signals",
        "ended_upstream_sessions",
        "sessions",
        "rate_limits",
        "verification_tokens",
        "audit_events",
        "revocations",
        "outbox",
    }
    assert await sql.scalar("SELECT count(*) FROM used_id_tokens") == 1
    async with sql.engine.begin() as connection:
        from sqlalchemy import text

        await connection.execute(
            text(
                "UPDATE used_id_tokens SET expires_at = '2000-01-01 00:00:00.000000'"
                if "sqlite" in database_url
                else "UPDATE used_id_tokens SET expires_at = '2000-01-01'"
            )
        )
    pruned = json.loads(run_cli("prune", "--json", env=env, cwd=tmp_path).stdout)
    assert pruned["used_id_tokens"] == 1


def test_ids_never_look_like_options() -> None:
    from identity.store.models import new_id

    assert not [i for i in (new_id() for _ in range(5000)) if i.startswith("-")]
