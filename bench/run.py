"""Benchmark (issue #8): python -m bench.run [--smoke] [--seconds N]

Starts PostgreSQL-backed `identity serve` (1 worker, then 2) with a local fake Google key set,
drives it with wrk from a separate process (32 connections, every exchange a distinct pre-minted
id_token), measures the references in the same run (`openssl speed rsa2048` on one core, a bare
Starlette endpoint returning the same JWKS bytes), and prints one table with each figure as a
ratio to its reference. --smoke runs every phase for about a second, with no targets.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import httpx
from joserfc.jwk import RSAKey
from sqlalchemy.engine import make_url

from identity.database import migrate
from identity.keys import KeyStore
from identity.verifier import TokenVerifier
from tests.fakes import WEB_CLIENT, FakeGoogle, serve_jwks
from tests.servers import base_env, free_port, serve, wait_until_ok

HERE = Path(__file__).resolve().parent
EXCHANGE = {
    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
    "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
}
CONNECTIONS = 32


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few seconds, no targets")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load phase")
    parser.add_argument("--rss-exchanges", type=int, default=20_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "IDENTITY_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rss_exchanges = 1.0, 300
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    Bench(args).run()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seconds = args.seconds
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.work = Path(tempfile.mkdtemp(prefix="identity-bench-"))
        self.google = FakeGoogle(key=RSAKey.generate_key(2048, private=True), clock=time.time)
        self.sign_rate, self.verify_rate = openssl_speed(2 if args.smoke else 5)

    def run(self) -> None:
        database = create_database(self.args.database_url)
        try:
            keys = self.work / "keys"
            KeyStore(keys).generate()
            with serve_jwks(self.google) as jwks_url:
                env = base_env(
                    IDENTITY_DATABASE_URL=database,
                    IDENTITY_KEYS_DIR=str(keys),
                    IDENTITY_GOOGLE_JWKS_URL=jwks_url,
                    IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
                )
                bare = self.bare_jwks(env)
                for workers in (1, 2):
                    self.phases(env, database, workers, bare)
                self.memory(env)
        finally:
            drop_database(self.args.database_url, database)
            shutil.rmtree(self.work, ignore_errors=True)
        self.print_table(bare)

    # -- references ---------------------------------------------------------------------------

    def bare_jwks(self, env: dict[str, str]) -> float:
        with serve(env, self.work) as server:
            document = self.work / "jwks.json"
            document.write_bytes(httpx.get(server.url + "/.well-known/jwks.json").content)
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.bare", str(port), str(document)], cwd=HERE.parent
        )
        try:
            wait_until_ok(f"http://127.0.0.1:{port}/.well-known/jwks.json")
            return wrk_get(f"http://127.0.0.1:{port}/.well-known/jwks.json", self.seconds).rps
        finally:
            process.terminate()
            process.wait()

    # -- the service --------------------------------------------------------------------------

    def phases(self, env: dict[str, str], database: str, workers: int, bare: float) -> None:
        wanted = int(max(2000, 1500 * self.seconds))  # more tokens than the phase can use
        returning = seed_users(database, 500)
        tokens = mint(self.google, wanted, returning, prefix=f"w{workers}")
        refresh_tokens = seed_sessions(database, wanted)
        port = free_port()
        own = {**env, "IDENTITY_PORT": str(port), "IDENTITY_ISSUER": f"http://127.0.0.1:{port}"}
        with serve(own, self.work, "--workers", str(workers)) as server:
            bodies = [urlencode({**EXCHANGE, "subject_token": t}) for t in tokens]
            exchange = wrk_post(server.url, "/token", bodies, self.seconds, self.work)
            self.add(f"exchange, {workers} worker(s)", exchange, self.sign_rate, "sign/s", 0.20)
            bodies = [
                urlencode({"grant_type": "refresh_token", "refresh_token": t})
                for t in refresh_tokens
            ]
            refresh = wrk_post(server.url, "/token", bodies, self.seconds, self.work)
            self.add(f"refresh, {workers} worker(s)", refresh, self.sign_rate, "sign/s", 0.25)
            access = first_access_token(server.url, self.google)
            me = wrk_get(server.url + "/users/me", self.seconds, f"Authorization: Bearer {access}")
            self.add(f"/users/me, {workers} worker(s)", me, bare, "bare JWKS", 0.15)
            jwks = wrk_get(server.url + "/.well-known/jwks.json", self.seconds)
            self.add(f"JWKS, {workers} worker(s)", jwks, bare, "bare JWKS", 0.9)
            etag = httpx.get(server.url + "/.well-known/jwks.json").headers["etag"]
            cached = wrk_get(
                server.url + "/.well-known/jwks.json", self.seconds, f"If-None-Match: {etag}"
            )
            self.add(f"JWKS 304, {workers} worker(s)", cached, bare, "bare JWKS", None)
            if workers == 1:
                rate = asyncio.run(verify_rate(server.url, access, self.seconds))
                self.rows.append(
                    (
                        "TokenVerifier.verify (in-process)",
                        f"{rate:,.0f}/s",
                        f"{self.verify_rate:,.0f} verify/s",
                        f"{rate / self.verify_rate:.2f}",
                        "≥ 0.50",
                    )
                )

    def memory(self, env: dict[str, str]) -> None:
        n = self.args.rss_exchanges
        tokens = mint(self.google, 2 * n, [], prefix="rss")
        with serve(env, self.work) as server:
            pid = server.process.pid
            # Exactly n exchanges each time (wrk runs for a duration, not a count).
            failed = asyncio.run(exchange_all(server.url, tokens[:n]))
            first = rss_mb(pid)
            failed += asyncio.run(exchange_all(server.url, tokens[n:]))
            second = rss_mb(pid)
        note = f", {failed} of {2 * n:,} failed" if failed else ""
        self.rows.append(
            (f"RSS after {n:,} exchanges (1 worker{note})", f"{first:.1f} MB", "", "", "≤ 120 MB")
        )
        self.rows.append(
            (f"RSS growth over the next {n:,}", f"{second - first:+.1f} MB", "", "", "< 5 MB")
        )

    # -- report -------------------------------------------------------------------------------

    def add(self, name: str, load: Load, reference: float, unit: str, target: float | None) -> None:
        figure = f"{load.rps:,.0f}/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms"
        if load.failed:
            figure += f", {load.failed} failed"
        self.rows.append(
            (
                name,
                figure,
                f"{reference:,.0f} {unit}",
                f"{load.rps / reference:.2f}",
                f"≥ {target:.2f}" if target is not None else "",
            )
        )

    def print_table(self, bare: float) -> None:
        print()
        print(
            f"references: openssl rsa2048 on one core {self.sign_rate:,.0f} sign/s, "
            f"{self.verify_rate:,.0f} verify/s; bare Starlette JWKS {bare:,.0f}/s "
            f"({CONNECTIONS} connections, wrk, {self.seconds:g} s per phase)"
        )
        print()
        header = ("figure", "measured", "reference", "ratio", "target")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(5)]
        for row in [header, tuple("-" * w for w in widths), *self.rows]:
            print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


# -- helpers ----------------------------------------------------------------------------------


def openssl_speed(seconds: int) -> tuple[float, float]:
    command = ["openssl", "speed", "-seconds", str(seconds), "rsa2048"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]  # one core, as the targets are stated
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"rsa\s+2048 bits\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", out)
    if match is None:
        sys.exit("bench: could not read `openssl speed rsa2048`")
    return float(match.group(1)), float(match.group(2))


def wrk(url: str, script: str, seconds: float, *script_args: str) -> Load:
    result = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / script),
            url,
            "--",
            *script_args,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    return Load(
        rps=summary["requests"] / (summary["duration_us"] / 1e6),
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        failed=summary["non2xx"] + summary["errors"],
    )


def wrk_get(url: str, seconds: float, *headers: str) -> Load:
    return wrk(url, "get.lua", seconds, *headers)


def wrk_post(base: str, path: str, bodies: list[str], seconds: float, work: Path) -> Load:
    file = work / f"bodies-{secrets.token_hex(4)}.txt"
    file.write_text("\n".join(bodies) + "\n")
    try:
        return wrk(base + path, "bodies.lua", seconds, str(file), path, "2")
    finally:
        file.unlink()


async def exchange_all(url: str, tokens: list[str]) -> int:
    """Exchange every token once, CONNECTIONS at a time; return how many did not get a 200."""
    queue = iter(tokens)
    failures = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        for token in queue:
            try:
                response = await client.post("/token", data={**EXCHANGE, "subject_token": token})
                failures += response.status_code != 200
            except httpx.TransportError:  # reported in the table, not fatal to the run
                failures += 1

    limits = httpx.Limits(max_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONNECTIONS)))
    return failures


def _mint_chunk(pem: bytes, kid: str, subjects: list[tuple[str, str]]) -> list[str]:
    google = FakeGoogle(key=RSAKey.import_key(pem), clock=time.time, kid=kid)
    now = int(time.time())
    return [google.mint(sub=sub, email=email, iat=now, exp=now + 3600) for sub, email in subjects]


def mint(google: FakeGoogle, n: int, returning: list[str], prefix: str) -> list[str]:
    """n id_tokens: half first sign-ins (new people), half people who signed in before."""
    subjects = []
    for i in range(n):
        if returning and i % 2:
            sub = returning[(i // 2) % len(returning)]
            subjects.append((sub, f"{sub}@gmail.com"))
        else:
            sub = f"{prefix}-{secrets.token_hex(6)}"
            subjects.append((sub, f"{sub}@gmail.com"))
    pem = google.key.as_pem(private=True)
    chunks = [subjects[i::2] for i in range(2)]
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(_mint_chunk, [pem] * 2, [google.kid] * 2, chunks))
    return [token for pair in zip(*parts, strict=False) for token in pair]


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(server_url: str) -> str:
    name = f"identity_bench_{secrets.token_hex(4)}"

    async def create() -> None:
        connection = await asyncpg.connect(_plain(server_url))
        await connection.execute(f'CREATE DATABASE "{name}"')
        await connection.close()

    asyncio.run(create())
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    return url


def drop_database(server_url: str, url: str) -> None:
    async def drop() -> None:
        connection = await asyncpg.connect(_plain(server_url))
        await connection.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
        await connection.close()

    asyncio.run(drop())


def seed_users(url: str, n: int) -> list[str]:
    """People who signed in before: users with a linked Google account."""
    subs = [f"ret-{secrets.token_hex(6)}" for _ in range(n)]
    now = datetime.now(UTC)

    async def seed() -> None:
        connection = await asyncpg.connect(_plain(url))
        users = [(secrets.token_urlsafe(16), f"{s}@gmail.com", s) for s in subs]
        await connection.executemany(
            "INSERT INTO users (id, name, email, email_verified, image, name_edited, image_edited,"
            " email_edited, created_at, updated_at) VALUES ($1, 'Bench', $2, $3, NULL, false,"
            " false, false, $3, $3)",
            [(uid, email, now) for uid, email, _ in users],
        )
        await connection.executemany(
            "INSERT INTO accounts (id, user_id, type, provider, provider_account_id, created_at,"
            " updated_at) VALUES ($1, $2, 'oidc', 'google', $3, $4, $4)",
            [(secrets.token_urlsafe(16), uid, sub, now) for uid, _, sub in users],
        )
        await connection.close()

    asyncio.run(seed())
    return subs


def seed_sessions(url: str, n: int) -> list[str]:
    """n live sessions of one user, each with a refresh token used once by the bench."""
    tokens = [secrets.token_urlsafe(32) for _ in range(n)]
    now = datetime.now(UTC)

    async def seed() -> None:
        connection = await asyncpg.connect(_plain(url))
        uid = secrets.token_urlsafe(16)
        await connection.execute(
            "INSERT INTO users (id, name, email, name_edited, image_edited, email_edited,"
            " created_at, updated_at) VALUES ($1, 'Bench', $2, false, false, false, $3, $3)",
            uid,
            f"{uid}@example.com",
            now,
        )
        await connection.executemany(
            "INSERT INTO sessions (id, session_token, user_id, expires, client_id, scope,"
            " created_at, last_used_at) VALUES ($1, $2, $3, $4, 'public', 'openid email profile',"
            " $5, $5)",
            [
                (
                    secrets.token_urlsafe(16),
                    hashlib.sha256(t.encode()).hexdigest(),
                    uid,
                    now + timedelta(days=30),
                    now,
                )
                for t in tokens
            ],
        )
        await connection.close()

    asyncio.run(seed())
    return tokens


def first_access_token(url: str, google: FakeGoogle) -> str:
    now = int(time.time())
    token = google.mint(
        sub=f"me-{secrets.token_hex(4)}",
        email=f"me{secrets.token_hex(4)}@gmail.com",
        iat=now,
        exp=now + 3600,
    )
    response = httpx.post(url + "/token", data={**EXCHANGE, "subject_token": token})
    response.raise_for_status()
    access: str = response.json()["access_token"]
    return access


async def verify_rate(url: str, token: str, seconds: float) -> float:
    verifier = TokenVerifier(url, url)
    await verifier.verify(token)  # warm: discovery and key set fetched
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            await verifier.verify(token)
        count += 200
    await verifier.aclose()
    return count / elapsed


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


if __name__ == "__main__":
    main()
