"""Benchmark: python -m bench.run [--smoke] [--seconds N] [--reps N] [--no-peers] [--pooler]
[--scale [--explain] [--fraction F]]

Measures what ships, on PostgreSQL, against references measured in the same run, and prints one
table of figures, ratios and targets (docs/performance.md):

- `identity serve` with 1 and 2 workers: exchange (half first sign-ins, half returning people,
  every id_token distinct and used once), refresh, `GET /users/me`, JWKS; every rule on
  (signature, claims, single use, the audit write, the session check), rate limits off; then
  the same service with the rate limits on at their defaults, 1 worker; then the memory of one
  worker over two rounds of exchanges.
- the references: `openssl speed rsa2048` on one core (the sign rate), a bare Starlette endpoint
  serving the same JWKS bytes (bench/bare.py), and, from ../shared/peers when it is there,
  fastapi-users' `GET /users/me` and Better Auth's id_token sign-in, get-session and /jwks.

- the pooler phase: exchange, refresh and `GET /users/me`, 1 worker, directly, directly with
  IDENTITY_DATABASE_POOL_MODE=transaction (the setting's own cost), and through PgBouncer in
  transaction mode (the pooler's), each against the first. `--pooler` runs this phase alone.

wrk -t1 -c32 for every side; each figure is the median of --reps runs of --seconds each.
--smoke runs every phase of the service once for a second, without peers or targets, so CI
keeps the script working.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
from joserfc.jwk import RSAKey
from sqlalchemy.engine import make_url

from identity.store.database import migrate
from identity.tokens.refresh_tokens import digest
from identity.tokens.signing_keys import KeyStore
from identity.verifier import TokenVerifier
from tests.fakes import MS_CLIENT, MS_TENANT, WEB_CLIENT, http_google, serve_issuers
from tests.poolers import find, pgbouncer
from tests.servers import base_env, free_port, serve, wait_until_ok

HERE = Path(__file__).resolve().parent
PEERS = HERE.parent.parent / "shared" / "peers"
if not PEERS.exists():  # a clone made away from the shared folder
    PEERS = Path("/work/shared/peers")
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
    failed: int  # answers other than 2xx, and socket errors
    exhausted: int = 0  # requests sent after the pre-minted bodies ran out (the run is invalid)


@dataclass
class Row:
    figure: str
    measured: str
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="every phase once, briefly")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--reps", type=int, default=3, help="runs per figure (the median)")
    parser.add_argument("--rss-exchanges", type=int, default=20_000)
    parser.add_argument("--no-peers", action="store_true", help="skip fastapi-users, Better Auth")
    parser.add_argument("--pooler", action="store_true", help="only the PgBouncer phase")
    parser.add_argument(
        "--scale", action="store_true", help="only the scale phase (bench/scale.py): not in smoke"
    )
    parser.add_argument("--explain", action="store_true", help="with --scale: EXPLAIN hot paths")
    parser.add_argument(
        "--no-compare", action="store_true", help="with --scale: skip empty against full"
    )
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="with --scale: of the full counts (quick look)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "IDENTITY_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.reps, args.rss_exchanges, args.no_peers = 1.0, 1, 300, True
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    Bench(args).run()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seconds: float = args.seconds
        self.reps: int = args.reps
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.work = Path(tempfile.mkdtemp(prefix="identity-bench-"))
        self.google_key = RSAKey.generate_key(2048, private=True)
        self.refs: dict[str, float] = {}

    def run(self) -> None:
        started = time.monotonic()
        try:
            if not (self.args.pooler or self.args.scale):
                self.references()
            with serve_issuers() as served:
                google = served.add(http_google(self.google_key, served.base))
                env = base_env(
                    IDENTITY_KEYS_DIR=str(self.work / "keys"),
                    IDENTITY_GOOGLE_JWKS_URL=google.jwks_url,
                    IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
                    # Every built-in provider configured, as a real deployment would: the
                    # provider is chosen by issuer among all of them.
                    IDENTITY_MICROSOFT_CLIENT_IDS=MS_CLIENT,
                    IDENTITY_MICROSOFT_TENANTS=MS_TENANT,
                    IDENTITY_APPLE_CLIENT_IDS="com.example.web",
                    IDENTITY_LOG_FORMAT="json",
                )
                KeyStore(self.work / "keys").generate()
                if self.args.scale:
                    from bench.scale import Scale  # imports this module: here, not at the top

                    Scale(self).run(env)
                elif not self.args.pooler:
                    self.bare_jwks(env)
                    for workers in (1, 2):
                        self.service(env, workers, limits=False)
                    self.service(env, 1, limits=True)
                    self.memory(env)
                if not self.args.scale:
                    self.pooler(env)
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        self.print_table(time.monotonic() - started)

    # -- references ---------------------------------------------------------------------------

    def references(self) -> None:
        self.refs["sign"], self.refs["verify"] = openssl_speed(2 if self.args.smoke else 5)
        if self.args.no_peers:
            return
        if not (PEERS / "setup.sh").exists():
            self.notes.append(f"peers not measured: {PEERS} is not there")
            return
        peers = self.work / "peers"
        shutil.copytree(PEERS, peers, ignore=shutil.ignore_patterns(".venv", "node_modules", "out"))
        setup = subprocess.run(["bash", "setup.sh"], cwd=peers, capture_output=True, text=True)
        if setup.returncode != 0:
            self.notes.append(f"peers not measured: setup.sh failed: {setup.stderr[-300:]}")
            return
        self.better_auth(peers)
        self.fastapi_users(peers)

    def better_auth(self, peers: Path) -> None:
        out = self.work / "better-auth"
        env = {
            **os.environ,
            "OUT": str(out),
            "DURATION": f"{self.seconds:g}s",
            "REPS": str(self.reps),
            "PG_ADMIN": _plain(self.args.database_url).rsplit("/", 1)[0] + "/postgres",
        }
        done = subprocess.run(
            ["bash", "run.sh"], cwd=peers / "better_auth", env=env, capture_output=True, text=True
        )
        summary = out / "summary.txt"
        if done.returncode != 0 or not summary.exists():
            self.notes.append(f"Better Auth not measured: run.sh failed: {done.stderr[-300:]}")
            return
        runs: dict[str, list[float]] = {}
        for line in summary.read_text().splitlines():
            match = re.match(
                r"(POST /sign-in/social|GET /get-session|GET /jwks)\s+\d+\s+([\d.]+)", line
            )
            if match and "INVALID" not in line:
                runs.setdefault(match.group(1), []).append(float(match.group(2)))
        for path, key in (
            ("POST /sign-in/social", "ba_sign_in"),
            ("GET /get-session", "ba_get_session"),
            ("GET /jwks", "ba_jwks"),
        ):
            if runs.get(path):
                self.refs[key] = statistics.median(runs[path])

    def fastapi_users(self, peers: Path) -> None:
        with database(self.args.database_url, migrated=False) as url:
            env = {
                **os.environ,
                "PEER_DATABASE_URL": url,
                "PEER_KEY_FILE": str(self.work / "peer_rs256.pem"),
            }
            python = str(peers / ".venv" / "bin" / "python")
            made = subprocess.run(
                [python, "fastapi_users/create_user.py"],
                cwd=peers,
                env=env,
                capture_output=True,
                text=True,
            )
            if made.returncode != 0:
                self.notes.append(f"fastapi-users not measured: {made.stderr[-300:]}")
                return
            token = made.stdout.strip()
            port = free_port()
            command = [
                str(peers / ".venv" / "bin" / "uvicorn"),
                "--app-dir",
                "fastapi_users",
                "peer_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "warning",
            ]
            with process(command, peers, env):
                url_me = f"http://127.0.0.1:{port}/users/me"
                wait_until_ok(url_me, headers={"Authorization": f"Bearer {token}"})
                load = self.repeat(
                    lambda: wrk_get(url_me, self.seconds, f"Authorization: Bearer {token}")
                )
                self.refs["fastapi_users_me"] = load.rps

    def bare_jwks(self, env: dict[str, str]) -> None:
        with (
            database(self.args.database_url) as url,
            serve({**env, "IDENTITY_DATABASE_URL": url}, self.work) as server,
        ):
            document = self.work / "jwks.json"
            document.write_bytes(httpx.get(server.url + "/.well-known/jwks.json").content)
        port = free_port()
        command = [sys.executable, "-m", "bench.bare", str(port), str(document)]
        with process(command, HERE.parent, dict(os.environ)):
            url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
            wait_until_ok(url)
            self.refs["bare_jwks"] = self.repeat(lambda: wrk_get(url, self.seconds)).rps

    # -- the service --------------------------------------------------------------------------

    def service(self, env: dict[str, str], workers: int, *, limits: bool) -> None:
        label = f"{workers} worker{'s' if workers > 1 else ''}" + (
            ", rate limits on" if limits else ""
        )
        own = dict(env)
        if limits:  # the defaults, as a deployment without IDENTITY_RATE_LIMIT_* has them
            own.pop("IDENTITY_RATE_LIMIT_FAILURES", None)
            own.pop("IDENTITY_RATE_LIMIT_SUBJECT", None)
        with database(self.args.database_url) as url:
            own["IDENTITY_DATABASE_URL"] = url
            port = free_port()
            own.update(IDENTITY_PORT=str(port), IDENTITY_ISSUER=f"http://127.0.0.1:{port}")
            with serve(own, self.work, "--workers", str(workers)) as server:
                self.exchange(server.url, url, label, workers, limits)
                self.refresh(server.url, url, label, workers, limits)
                access = first_access_token(server.url, self.google_key)
                me = self.repeat(
                    lambda: wrk_get(
                        server.url + "/users/me", self.seconds, f"Authorization: Bearer {access}"
                    )
                )
                self.add(f"GET /users/me, {label}", me)
                if workers == 1 and not limits:
                    self.compare(me, "fastapi_users_me", "fastapi-users /users/me", 5.0)
                    self.compare(me, "ba_get_session", "Better Auth get-session", 3.0)
                if limits:
                    return
                jwks = self.repeat(
                    lambda: wrk_get(server.url + "/.well-known/jwks.json", self.seconds)
                )
                self.add(f"JWKS, {label}", jwks)
                if workers == 1:
                    self.compare(jwks, "bare_jwks", "bare Starlette JWKS", 0.75)
                    self.compare(jwks, "ba_jwks", "Better Auth /jwks", 5.0)
                    rate = asyncio.run(verify_rate(server.url, access, self.seconds))
                    self.rows.append(
                        Row(
                            "TokenVerifier.verify, in-process",
                            f"{rate:,.0f}/s",
                            f"openssl verify {self.refs['verify']:,.0f}/s",
                            rate / self.refs["verify"],
                        )
                    )

    def exchange(self, base: str, url: str, label: str, workers: int, limits: bool) -> None:
        # Sized from a short warm-up: enough distinct tokens for every run, none replayed.
        returning = seed_users(url, 3000 if limits else 500)
        warm = mint(self.google_key, int(3000 * min(self.seconds, 2)), returning, "warm")
        warm_rate = wrk_post(base, "/token", bodies(warm), min(self.seconds, 2), self.work).rps
        # A cold worker's warm-up is slower than the runs that follow: mint generously.
        per_run = int(max(1000, warm_rate * 2.5) * self.seconds)
        runs = iter(
            [bodies(mint(self.google_key, per_run, returning, f"run{i}")) for i in range(self.reps)]
        )
        load = self.repeat(lambda: wrk_post(base, "/token", next(runs), self.seconds, self.work))
        self.add(f"exchange, {label}", load)
        if limits:
            return
        target, p99 = {1: (0.15, 150.0), 2: (0.25, 100.0)}[workers]
        self.compare(load, "sign", "one-core RSA-2048 sign", target)
        self.rows.append(
            Row(
                f"exchange p99, {label}",
                f"{load.p99_ms:.1f} ms",
                "",
                None,
                f"< {p99:.0f} ms",
                load.p99_ms < p99,
            )
        )
        if workers == 1:
            self.compare(load, "ba_sign_in", "Better Auth id_token sign-in", 3.0)

    def refresh(self, base: str, url: str, label: str, workers: int, limits: bool) -> None:
        per_run = int(4000 * workers * self.seconds)
        runs = iter([seed_sessions(url, per_run) for _ in range(self.reps)])

        def one() -> Load:
            tokens = next(runs)
            form = [urlencode({"grant_type": "refresh_token", "refresh_token": t}) for t in tokens]
            return wrk_post(base, "/token", form, self.seconds, self.work)

        load = self.repeat(one)
        self.add(f"refresh, {label}", load)
        if not limits:
            self.compare(load, "sign", "one-core RSA-2048 sign", {1: 0.20, 2: 0.30}[workers])

    def memory(self, env: dict[str, str]) -> None:
        n = self.args.rss_exchanges
        tokens = mint(self.google_key, 2 * n, [], prefix="rss")
        with (
            database(self.args.database_url) as url,
            serve({**env, "IDENTITY_DATABASE_URL": url}, self.work) as server,
        ):
            pid = server.process.pid
            # Exactly n exchanges each time (wrk runs for a duration, not a count).
            failed = asyncio.run(exchange_all(server.url, tokens[:n]))
            first = rss_mb(pid)
            failed += asyncio.run(exchange_all(server.url, tokens[n:]))
            second = rss_mb(pid)
            if failed:  # what the service said about them, for whoever reads the run
                lines = server.log_text().splitlines()
                said = [line for line in lines if '"level":"error"' in line]
                self.notes += [f"memory phase, service log: {line[:300]}" for line in said[:3]]
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(failed.items()))
        note = f", {failed.total()} of {2 * n:,} failed ({kinds})" if failed else ""
        self.rows.append(
            Row(
                f"RSS after {n:,} exchanges, 1 worker{note}",
                f"{first:.1f} MB",
                "",
                None,
                "≤ 120 MB",
                first <= 120,
            )
        )
        self.rows.append(
            Row(
                f"RSS growth over the next {n:,}",
                f"{second - first:+.1f} MB",
                "",
                None,
                "< 5 MB",
                second - first < 5,
            )
        )

    def pooler(self, env: dict[str, str]) -> None:
        """Exchange, refresh and /users/me (1 worker): directly, directly in transaction mode,
        and through PgBouncer in transaction mode; the last two against the first."""
        if find("pgbouncer") is None:
            self.notes.append("pooler phase not run: pgbouncer is not installed")
            return
        ways = (
            ("direct", False, "session"),
            ("direct, pool mode transaction", False, "transaction"),
            ("PgBouncer, pool mode transaction", True, "transaction"),
        )
        baseline: dict[str, Load] = {}
        with pgbouncer(self.args.database_url, pool_size=20) as bouncer:
            for label, through, mode in ways:
                with database(self.args.database_url) as url:
                    port = free_port()
                    own = {
                        **env,
                        "IDENTITY_DATABASE_URL": bouncer.url(url) if through else url,
                        "IDENTITY_DATABASE_POOL_MODE": mode,
                        "IDENTITY_PORT": str(port),
                        "IDENTITY_ISSUER": f"http://127.0.0.1:{port}",
                    }
                    with serve(own, self.work) as server:
                        loads = self.three_paths(server.url, url)
                for path, load in loads.items():
                    self.add(f"{path}, {label}", load)
                    if path in baseline:
                        ratio = load.rps / baseline[path].rps
                        reference = f"direct {baseline[path].rps:,.0f}/s"
                        self.rows.append(Row("  vs direct", "", reference, ratio))
                    else:
                        baseline[path] = load

    def three_paths(self, base: str, url: str) -> dict[str, Load]:
        returning = seed_users(url, 500)
        per_run = int(1500 * self.seconds)
        tokens = iter(
            [
                bodies(mint(self.google_key, per_run, returning, f"pool{i}"))
                for i in range(self.reps)
            ]
        )
        exchange = self.repeat(
            lambda: wrk_post(base, "/token", next(tokens), self.seconds, self.work)
        )
        sessions = iter([seed_sessions(url, int(3000 * self.seconds)) for _ in range(self.reps)])

        def refresh() -> Load:
            form = [
                urlencode({"grant_type": "refresh_token", "refresh_token": t})
                for t in next(sessions)
            ]
            return wrk_post(base, "/token", form, self.seconds, self.work)

        refreshed = self.repeat(refresh)
        access = first_access_token(base, self.google_key)
        me = self.repeat(
            lambda: wrk_get(base + "/users/me", self.seconds, f"Authorization: Bearer {access}")
        )
        return {"exchange": exchange, "refresh": refreshed, "GET /users/me": me}

    # -- measuring and reporting --------------------------------------------------------------

    def repeat(self, run: Callable[[], Load]) -> Load:
        loads = [run() for _ in range(self.reps)]
        return Load(
            rps=statistics.median(x.rps for x in loads),
            p50_ms=statistics.median(x.p50_ms for x in loads),
            p99_ms=statistics.median(x.p99_ms for x in loads),
            failed=sum(x.failed for x in loads),
            exhausted=sum(x.exhausted for x in loads),
        )

    def add(self, name: str, load: Load) -> None:
        figure = f"{load.rps:,.0f}/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms"
        if load.failed:
            figure += f", {load.failed} FAILED"
        if load.exhausted:
            figure += f", INVALID: bodies ran out ({load.exhausted} replays)"
        self.rows.append(Row(name, figure))

    def compare(self, load: Load, ref: str, name: str, target: float) -> None:
        if ref not in self.refs:
            return
        ratio = load.rps / self.refs[ref]
        met = None if self.args.smoke else ratio >= target
        self.rows.append(
            Row(f"  vs {name}", "", f"{self.refs[ref]:,.0f}/s", ratio, f"≥ {target:g}x", met)
        )

    def print_table(self, elapsed: float) -> None:
        if self.args.smoke:  # a second per figure says nothing about targets
            for row in self.rows:
                row.met = None
        refs = ", ".join(f"{k} {v:,.0f}/s" for k, v in self.refs.items())
        print()
        print(
            f"identity benchmark: PostgreSQL, wrk -t1 -c{CONNECTIONS}, median of {self.reps} x "
            f"{self.seconds:g} s per figure, {elapsed:.0f} s in all"
        )
        print(f"references measured in this run: {refs}")
        for note in self.notes:
            print(f"note: {note}")
        print()
        header = ("figure", "measured", "reference", "ratio", "target", "")
        lines = [
            (
                r.figure,
                r.measured,
                r.reference,
                f"{r.ratio:.2f}" if r.ratio is not None else "",
                r.target,
                {True: "met", False: "NOT MET", None: ""}[r.met],
            )
            for r in self.rows
        ]
        widths = [max(len(x[i]) for x in [header, *lines]) for i in range(6)]
        for line in [header, tuple("-" * w for w in widths), *lines]:
            print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")


# -- helpers ----------------------------------------------------------------------------------


@contextmanager
def process(
    command: list[str], cwd: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


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
            "-t1",
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
        failed=summary["non2xx"] + summary["errors"] - summary.get("exhausted", 0),
        exhausted=summary.get("exhausted", 0),
    )


def wrk_get(url: str, seconds: float, *headers: str) -> Load:
    return wrk(url, "get.lua", seconds, *headers)


def wrk_post(base: str, path: str, form: list[str], seconds: float, work: Path) -> Load:
    file = work / f"bodies-{secrets.token_hex(4)}.txt"
    file.write_text("\n".join(form) + "\n")
    try:
        return wrk(base + path, "bodies.lua", seconds, str(file), path, "1")
    finally:
        file.unlink()


def bodies(tokens: list[str]) -> list[str]:
    return [urlencode({**EXCHANGE, "subject_token": t}) for t in tokens]


async def exchange_all(url: str, tokens: list[str]) -> Counter[str]:
    """Exchange every token once, CONNECTIONS at a time; count the answers that were not 200
    by status (or by the transport error's name), so a failure says what it was."""
    queue = iter(tokens)
    failures: Counter[str] = Counter()

    async def worker(client: httpx.AsyncClient) -> None:
        for token in queue:
            try:
                response = await client.post("/token", data={**EXCHANGE, "subject_token": token})
                if response.status_code != 200:
                    failures[str(response.status_code)] += 1
            except httpx.TransportError as error:  # reported in the table, not fatal to the run
                failures[type(error).__name__] += 1

    limits = httpx.Limits(max_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONNECTIONS)))
    return failures


def _mint_chunk(pem: bytes, subjects: list[str]) -> list[str]:
    google = http_google(RSAKey.import_key(pem), "http://unused")
    now = int(time.time())
    return [google.mint(sub=s, email=f"{s}@gmail.com", iat=now, exp=now + 3600) for s in subjects]


def mint(key: Any, n: int, returning: list[str], prefix: str) -> list[str]:
    """n id_tokens: half first sign-ins (new people), half people who signed in before."""
    subjects = [
        returning[(i // 2) % len(returning)]
        if returning and i % 2
        else f"{prefix}-{secrets.token_hex(6)}"
        for i in range(n)
    ]
    pem = key.as_pem(private=True)
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(_mint_chunk, [pem] * 2, [subjects[0::2], subjects[1::2]]))
    return [token for pair in zip(*parts, strict=False) for token in pair]


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def database(server_url: str, *, migrated: bool = True) -> Iterator[str]:
    """A database of its own for one phase, dropped afterwards."""
    name = f"identity_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        if migrated:
            migrate(url)
        yield url
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(_plain(server_url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def seed_users(url: str, n: int) -> list[str]:
    """People who signed in before: users with a linked Google account."""
    subs = [f"ret-{secrets.token_hex(6)}" for _ in range(n)]
    now = datetime.now(UTC)

    async def seed() -> None:
        connection = await asyncpg.connect(_plain(url))
        users = [(secrets.token_hex(16), f"{s}@gmail.com", s) for s in subs]
        await connection.executemany(
            "INSERT INTO users (id, name, email, email_verified, name_edited, image_edited,"
            " email_edited, created_at, updated_at) VALUES ($1, 'Bench', $2, $3, false, false,"
            " false, $3, $3)",
            [(uid, email, now) for uid, email, _ in users],
        )
        await connection.executemany(
            "INSERT INTO accounts (id, user_id, type, provider, provider_account_id, created_at,"
            " updated_at) VALUES ($1, $2, 'oidc', 'google', $3, $4, $4)",
            [(secrets.token_hex(16), uid, sub, now) for uid, _, sub in users],
        )
        await connection.close()

    asyncio.run(seed())
    return subs


def seed_sessions(url: str, n: int) -> list[str]:
    """n live sessions, ten per user (under the per-user limit), each refreshed once."""
    tokens = [secrets.token_urlsafe(32) for _ in range(n)]
    users = [secrets.token_hex(16) for _ in range(max(1, n // 10))]
    now = datetime.now(UTC)

    async def seed() -> None:
        connection = await asyncpg.connect(_plain(url))
        await connection.executemany(
            "INSERT INTO users (id, name, email, name_edited, image_edited, email_edited,"
            " created_at, updated_at) VALUES ($1, 'Bench', $2, false, false, false, $3, $3)",
            [(uid, f"{uid}@example.com", now) for uid in users],
        )
        await connection.executemany(
            "INSERT INTO sessions (id, session_token, user_id, expires, client_id, scope,"
            " created_at, last_used_at) VALUES ($1, $2, $3, $4, 'public', 'openid email profile',"
            " $5, $5)",
            [
                (
                    secrets.token_hex(16),
                    digest(t),
                    users[i % len(users)],
                    now + timedelta(days=30),
                    now,
                )
                for i, t in enumerate(tokens)
            ],
        )
        await connection.close()

    asyncio.run(seed())
    return tokens


def first_access_token(url: str, key: Any) -> str:
    token = _mint_chunk(key.as_pem(private=True), [f"me-{secrets.token_hex(4)}"])[0]
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
