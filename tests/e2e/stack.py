"""The whole demo: a Google and a Microsoft emulator, identity, and the Next.js app (two
instances behind a router, as a web app runs on several servers), on loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..servers import Server, base_env, free_port, serve, wait_until_ok
from .emulator import TENANT, Emulator, running
from .router import routing

APP_DIR = Path(__file__).resolve().parent
GOOGLE_CLIENT_ID = "demo-app.apps.googleusercontent.com"
GOOGLE_CLIENT_SECRET = "demo-google-secret"
MICROSOFT_CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
MICROSOFT_CLIENT_SECRET = "demo-microsoft-secret"
IDENTITY_CLIENT_ID = "nextjs"
IDENTITY_CLIENT_SECRET = "demo-nextjs-secret-0123"


@dataclass
class Stack:
    app_url: str
    identity: Server
    google: Emulator
    microsoft: Emulator
    database: Path


def npm() -> str | None:
    return shutil.which("npm")


def install() -> None:
    """npm packages of the app, from its lock file (once)."""
    if not (APP_DIR / "node_modules" / ".package-lock.json").exists():
        subprocess.run(
            [npm() or "npm", "ci", "--no-audit", "--no-fund"], cwd=APP_DIR, check=True, timeout=900
        )


def build() -> None:
    subprocess.run(
        [str(APP_DIR / "node_modules" / ".bin" / "next"), "build"],
        cwd=APP_DIR,
        check=True,
        timeout=900,
        env=base_env(NEXT_TELEMETRY_DISABLED="1"),
        stdout=subprocess.DEVNULL,
    )


@contextmanager
def stack(workdir: Path, *, access_token_ttl: int = 900, app_port: int = 0) -> Iterator[Stack]:
    database = workdir / "identity.db"
    with (
        running(GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET) as google,
        running(MICROSOFT_CLIENT_ID, MICROSOFT_CLIENT_SECRET, microsoft=True) as microsoft,
    ):
        env = base_env(
            IDENTITY_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
            IDENTITY_GOOGLE_JWKS_URL=google.base + google.paths["jwks"],
            IDENTITY_GOOGLE_ISSUERS=google.issuer,
            IDENTITY_GOOGLE_CLIENT_IDS=GOOGLE_CLIENT_ID,
            IDENTITY_MICROSOFT_CLIENT_IDS=MICROSOFT_CLIENT_ID,
            IDENTITY_MICROSOFT_TENANTS=TENANT,
            IDENTITY_MICROSOFT_AUTHORITY=microsoft.base,
            IDENTITY_CLIENTS=f"{IDENTITY_CLIENT_ID}:{IDENTITY_CLIENT_SECRET}",
            IDENTITY_ACCESS_TOKEN_TTL=str(access_token_ttl),
            IDENTITY_CLOCK_SKEW="0",
        )
        with serve(env, workdir) as identity:
            ports = (free_port(), free_port())
            with routing(*ports, port=app_port) as app_url:
                app_env = base_env(
                    IDENTITY_URL=identity.url,
                    IDENTITY_CLIENT_ID=IDENTITY_CLIENT_ID,
                    IDENTITY_CLIENT_SECRET=IDENTITY_CLIENT_SECRET,
                    IDENTITY_REFRESH_MARGIN_MS="1000",
                    GOOGLE_CLIENT_ID=GOOGLE_CLIENT_ID,
                    GOOGLE_CLIENT_SECRET=GOOGLE_CLIENT_SECRET,
                    GOOGLE_WELL_KNOWN=google.base + google.paths["discovery"],
                    MICROSOFT_CLIENT_ID=MICROSOFT_CLIENT_ID,
                    MICROSOFT_CLIENT_SECRET=MICROSOFT_CLIENT_SECRET,
                    MICROSOFT_WELL_KNOWN=microsoft.base + microsoft.paths["discovery"],
                    NEXTAUTH_URL=app_url,
                    NEXTAUTH_SECRET="demo-nextauth-secret-0123456789",
                    NEXT_TELEMETRY_DISABLED="1",
                )
                with (
                    _next(ports[0], app_env, workdir / "next-a.log"),
                    _next(ports[1], app_env, workdir / "next-b.log"),
                ):
                    yield Stack(app_url, identity, google, microsoft, database)


@contextmanager
def _next(port: int, env: dict[str, str], log_path: Path) -> Iterator[None]:
    """One instance of the app (`next start`), until the block ends."""
    with log_path.open("wb") as log:
        app = subprocess.Popen(
            [
                str(APP_DIR / "node_modules" / ".bin" / "next"),
                "start",
                "-p",
                str(port),
                "-H",
                "127.0.0.1",
            ],
            cwd=APP_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_ok(f"http://127.0.0.1:{port}/signin", timeout=60, process=app)
            yield
        finally:
            app.terminate()
            app.wait(timeout=20)


def main() -> None:
    """`python -m tests.e2e.demo`'s body: install, build, run until Ctrl+C."""
    if npm() is None:
        sys.exit("npm is not installed: the demo app needs Node.js and npm")
    install()
    print("building the Next.js app (about a minute the first time)…", flush=True)
    build()
    workdir = Path(os.environ.get("DEMO_DIR", APP_DIR / ".demo"))
    workdir.mkdir(exist_ok=True)
    # SIGTERM ends the demo like Ctrl+C does, so the services it started are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with stack(workdir, app_port=3000) as running_stack:
        print(f"demo app:   {running_stack.app_url}  (sign in with an emulated account)")
        print(f"identity:   {running_stack.identity.url}")
        print(f"google:     {running_stack.google.issuer}")
        print(f"microsoft:  {running_stack.microsoft.issuer}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
