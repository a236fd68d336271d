"""Two checkouts of identity side by side, by the server's CPU time per request.

    python -m bench.ab BEFORE_PYTHON AFTER_PYTHON [--rounds 3] [--seconds 5]
                       [--after-webhooks user.created,session.ended]

Each PYTHON is the interpreter of a checkout's virtual environment (`…/.venv/bin/python`): that
checkout migrates its own database, generates its own key and serves; this harness (the tree it
runs from) only drives the load with wrk and reads the server's CPU time from /proc. The sides
alternate, a fresh server and database each round, one worker each.

Why CPU time per request rather than requests per second: on a shared machine another process
on the same cores moves the throughput of a run by tens of percent, while the CPU time the
server spends per request moves far less (docs/performance.md, "Layout change (0.3)"). It does
not count PostgreSQL's own CPU, which both sides share through the same SQL.

`--after-webhooks EVENTS` gives the after side a webhook endpoint subscribed to EVENTS (a local
receiver answering 200): one checkout against itself, the outbox off and on, delivery included
(its worker runs in the measured server).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

from joserfc.jwk import RSAKey

from bench.run import (
    Load,
    bodies,
    database,
    first_access_token,
    mint,
    seed_sessions,
    seed_users,
    wrk_get,
    wrk_post,
)
from tests.fakes import WEB_CLIENT, http_google, serve_issuers
from tests.receivers import receiver
from tests.servers import base_env, free_port, wait_until_ok

TICKS = os.sysconf("SC_CLK_TCK")
PHASES = ("exchange", "refresh", "GET /users/me", "JWKS")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and every process below it, now."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo += [child for child, parent in parents.items() if parent == current]
    return total


@contextmanager
def side(
    python: str, server_url: str, jwks: str, work: Path, extra: dict[str, str]
) -> Iterator[tuple[str, int, str]]:
    """One checkout serving on a database of its own, `extra` in its environment: (base URL,
    server pid, database URL)."""
    with database(server_url, migrated=False) as url:
        port = free_port()
        env = base_env(
            IDENTITY_DATABASE_URL=url,
            IDENTITY_KEYS_DIR=str(work / f"keys-{port}"),
            IDENTITY_GOOGLE_JWKS_URL=jwks,
            IDENTITY_GOOGLE_CLIENT_IDS=WEB_CLIENT,
            IDENTITY_PORT=str(port),
            IDENTITY_ISSUER=f"http://127.0.0.1:{port}",
            IDENTITY_LOG_FORMAT="json",
            **extra,
        )
        for command in (["migrate"], ["keys", "generate"]):
            subprocess.run(
                [python, "-m", "identity", *command],
                env=env,
                cwd=work,
                check=True,
                capture_output=True,
            )
        with (work / f"server-{port}.log").open("wb") as log:
            server = subprocess.Popen(
                [python, "-m", "identity", "serve", "--workers", "1"],
                env=env,
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_ok(base + "/readyz", timeout=60, process=server)
            yield base, server.pid, url
        finally:
            server.terminate()
            server.wait(timeout=20)


def measured(pid: int, seconds: float, run: Callable[[], Load]) -> tuple[float, float]:
    """(requests per second, server CPU milliseconds per request) of one run."""
    before = tree_cpu(pid)
    load = run()
    spent = tree_cpu(pid) - before
    if load.failed or load.exhausted:
        raise SystemExit(f"bench.ab: a run failed ({load})")
    return load.rps, spent * 1000 / (load.rps * seconds)


def round_of(
    python: str,
    args: argparse.Namespace,
    key: RSAKey,
    jwks: str,
    work: Path,
    extra: dict[str, str],
) -> dict[str, tuple[float, float]]:
    seconds = args.seconds
    with side(python, args.database_url, jwks, work, extra) as (base, pid, url):
        results: dict[str, tuple[float, float]] = {}
        returning = seed_users(url, 500)
        wrk_post(base, "/token", bodies(mint(key, 1500, returning, "warm")), 1, work)
        # Half new people, half returning ones; none replayed.
        tokens = bodies(mint(key, int(1500 * seconds), returning, "run"))
        results["exchange"] = measured(
            pid, seconds, lambda: wrk_post(base, "/token", tokens, seconds, work)
        )
        form = [
            urlencode({"grant_type": "refresh_token", "refresh_token": t})
            for t in seed_sessions(url, int(2500 * seconds))
        ]
        results["refresh"] = measured(
            pid, seconds, lambda: wrk_post(base, "/token", form, seconds, work)
        )
        access = first_access_token(base, key)
        results["GET /users/me"] = measured(
            pid,
            seconds,
            lambda: wrk_get(base + "/users/me", seconds, f"Authorization: Bearer {access}"),
        )
        results["JWKS"] = measured(
            pid, seconds, lambda: wrk_get(base + "/.well-known/jwks.json", seconds)
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "IDENTITY_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--after-webhooks", default="", help="events the after side's webhook subscribes to"
    )
    args = parser.parse_args()
    key = RSAKey.generate_key(2048, private=True)
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {"before": {}, "after": {}}
    with (
        tempfile.TemporaryDirectory(prefix="identity-ab-") as tmp,
        serve_issuers() as served,
        receiver(200) as hooks,
    ):
        google = served.add(http_google(key, served.base))
        after: dict[str, str] = {}
        if args.after_webhooks:
            events = ", ".join(f'"{e.strip()}"' for e in args.after_webhooks.split(","))
            secret = "whsec_" + base64.b64encode(b"bench-ab-webhook-secret-32-bytes").decode()
            (Path(tmp) / "webhooks.toml").write_text(
                f'[[endpoints]]\nurl = "{hooks.url}/hooks"\nsecret = "{secret}"\n'
                f"events = [{events}]\n"
            )
            after["IDENTITY_WEBHOOKS_FILE"] = str(Path(tmp) / "webhooks.toml")
        for number in range(args.rounds):
            for name in ("before", "after"):
                python = args.before if name == "before" else args.after
                extra = after if name == "after" else {}
                for phase, figures in round_of(
                    python, args, key, google.jwks_url, Path(tmp), extra
                ).items():
                    runs[name].setdefault(phase, []).append(figures)
                print(f"round {number + 1} {name}: {runs[name]}", flush=True)
    print(
        f"\n{'phase':<16} {'before ms/req':>14} {'after ms/req':>13} {'after/before':>13}"
        f" {'before req/s':>13} {'after req/s':>12}"
    )
    for phase in PHASES:
        if phase not in runs["before"]:
            continue
        b = statistics.median(cpu for _, cpu in runs["before"][phase])
        a = statistics.median(cpu for _, cpu in runs["after"][phase])
        br = statistics.median(rps for rps, _ in runs["before"][phase])
        ar = statistics.median(rps for rps, _ in runs["after"][phase])
        print(f"{phase:<16} {b:>14.3f} {a:>13.3f} {a / b:>13.2f} {br:>13,.0f} {ar:>12,.0f}")
    if args.after_webhooks:
        print(f"webhooks received by the after side's endpoint: {len(hooks.received):,}")


if __name__ == "__main__":
    main()
