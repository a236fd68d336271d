"""The whole demo: Google emulator, identity, and the Next.js app, on loopback ports."""

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
from .google_emulator import Emulator, running

APP_DIR = Path(__file__).resolve().parent
GOOGLE_CLIENT_ID = "demo-app.apps.googleusercontent.com"
GOOGLE_CLIENT_SECRET = "demo-google-secret"
IDENTITY_CLIENT_ID = "nextjs"
IDENTITY_CLIENT_SECRET = "demo-nextjs-secret-0123"


@dataclass
class Stack:
    app_url: str
    identity: Server
    google: Emulator
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
    port = app_port or free_port()
    app_url = f"http://127.0.0.1:{port}"
    database = workdir / "identity.db"
    with running(GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET) as google:
        env = base_env(
            IDENTITY_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
            IDENTITY_GOOGLE_JWKS_URL=f"{google.issuer}/oauth2/v3/certs",
            IDENTITY_GOOGLE_ISSUERS=google.issuer,
            IDENTITY_GOOGLE_CLIENT_IDS=GOOGLE_CLIENT_ID,
            IDENTITY_CLIENTS=f"{IDENTITY_CLIENT_ID}:{IDENTITY_CLIENT_SECRET}",
            IDENTITY_ACCESS_TOKEN_TTL=str(access_token_ttl),
            IDENTITY_CLOCK_SKEW="0",
        )
        with serve(env, workdir) as identity:
            app_env = base_env(
                IDENTITY_URL=identity.url,
                IDENTITY_CLIENT_ID=IDENTITY_CLIENT_ID,
                IDENTITY_CLIENT_SECRET=IDENTITY_CLIENT_SECRET,
                IDENTITY_REFRESH_MARGIN_MS="1000",
                GOOGLE_CLIENT_ID=GOOGLE_CLIENT_ID,
                GOOGLE_CLIENT_SECRET=GOOGLE_CLIENT_SECRET,
                GOOGLE_WELL_KNOWN=f"{google.issuer}/.well-known/openid-configuration",
                NEXTAUTH_URL=app_url,
                NEXTAUTH_SECRET="demo-nextauth-secret-0123456789",
                NEXT_TELEMETRY_DISABLED="1",
            )
            log = (workdir / "next.log").open("wb")
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
                env=app_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_until_ok(app_url + "/signin", timeout=60, process=app)
                yield Stack(app_url, identity, google, database)
            finally:
                app.terminate()
                app.wait(timeout=20)
                log.close()


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
        print(f"demo app:  {running_stack.app_url}  (sign in with the emulated Google account)")
        print(f"identity:  {running_stack.identity.url}")
        print(f"google:    {running_stack.google.issuer}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
