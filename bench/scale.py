"""The scale phase: python -m bench.run --scale [--explain] [--fraction F]

1. Fills a database of its own (migrated by the real migrations) with 1,000,000 users, each with
   an account, 2,000,000 live sessions, 5,000,000 used id_tokens still in their single-use
   window, 10,000,000 audit events over the last year and 100,000 rate-limit windows, by
   `INSERT … SELECT generate_series` on the server: the constraints and indexes are dropped for
   the fill and made again afterwards under their own names (the schema is the migrations'),
   the filling session runs with synchronous_commit off and a large maintenance_work_mem, and the
   tables are vacuumed and analysed at the end, as autovacuum would have left them.
2. Serves an empty database and the full one side by side (one worker each, the same settings)
   and measures exchange, refresh and `GET /users/me` on each, alternating the two within every
   repetition so that the shared machine's noise falls on both; the ratio full / empty.
3. With --explain: EXPLAIN (ANALYZE, BUFFERS) of every hot statement at that size, the inner
   statements of identity_sign_in and identity_refresh included (auto_explain, nested).
4. Adds an expired backlog (1,000,000 sessions past their end, 1,000,000 used id_tokens past
   their window, 1,000,000 audit events past retention), measures the exchange, then runs the
   janitor (`identity prune`) while the exchange load runs: the exchange p99 during pruning
   against its baseline, and the longest heavyweight-lock wait of any sign-in or refresh seen by
   sampling pg_locks.waitstart every 5 ms.
5. The database's size after the fill, per table.

--fraction scales every count (0.05 for a quick look); the figures are for 1.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg

from bench.run import (
    Bench,
    Load,
    Row,
    _plain,
    bodies,
    database,
    first_access_token,
    mint,
    seed_sessions,
    seed_users,
    wrk_get,
    wrk_post,
)
from tests.servers import free_port, serve

COUNTS = {
    "users": 1_000_000,
    "sessions": 2_000_000,
    "used_id_tokens": 5_000_000,
    "audit_events": 10_000_000,
    "rate_limits": 100_000,
}
BACKLOG = 1_000_000  # of each kind: sessions, used id_tokens, audit events
FILLED = ("users", "accounts", "sessions", "used_id_tokens", "audit_events", "rate_limits")
YEAR = 366 * 86400
# A year of audit events kept (IDENTITY_AUDIT_RETENTION): the fill's year is not pruned while the
# empty and full databases are compared; the backlog of step 4 is older than that.
RETENTION = str(YEAR)

# An opaque id shaped like models.new_id (22 url-safe characters), from a kind and a number.
ID = """CREATE FUNCTION pg_temp.bid(p text, i bigint) RETURNS text IMMUTABLE LANGUAGE sql AS
$$ SELECT translate(encode(decode(md5(p || i::text), 'hex'), 'base64'), '+/=', '-_') $$"""
HEX = "encode(sha256(convert_to({} || {}::text, 'UTF8')), 'hex')"
AGENT = "'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 Version/17.2 Safari'"


def google_sub(i: int) -> str:
    return f"1{i:020d}"


def fill_statements(n: dict[str, int]) -> list[tuple[str, str]]:
    users, sessions = n["users"], n["sessions"]
    # Users i = 1..users; a multiplier coprime with 10 spreads references over all of them.
    return [
        (
            "users",
            f"""INSERT INTO users (id, name, email, email_verified, email_verified_by, image,
                name_edited, image_edited, email_edited, last_sign_in_at, created_at, updated_at)
            SELECT pg_temp.bid('u', i), 'Person ' || i,
                CASE WHEN i % 20 < 16 THEN '1' || lpad(i::text, 20, '0') || '@gmail.com'
                     ELSE 'person' || i || '@example.com' END,
                c, CASE WHEN i % 20 < 16 THEN 'google' ELSE 'microsoft' END,
                CASE WHEN i % 2 = 0 THEN 'https://lh3.googleusercontent.com/a/' || md5('i' || i)
                END,
                false, false, false, c + interval '1 day', c, c + interval '1 day'
            FROM generate_series(1, {users}) i,
                 LATERAL (SELECT now() - (i % {YEAR}) * interval '1 second'
                          - (i % 365) * interval '1 day' AS c) t""",
        ),
        (
            "accounts",
            f"""INSERT INTO accounts (id, user_id, type, provider, provider_account_id,
                created_at, updated_at)
            SELECT pg_temp.bid('a', i), pg_temp.bid('u', i), 'oidc',
                CASE WHEN i % 20 < 16 THEN 'google' WHEN i % 20 < 19 THEN 'microsoft'
                     ELSE 'apple' END,
                CASE WHEN i % 20 < 16 THEN '1' || lpad(i::text, 20, '0')
                     WHEN i % 20 < 19 THEN '00000000-0000-0000-' || substr(md5('m' || i), 1, 4)
                                            || '-' || substr(md5('m' || i), 5, 12)
                     ELSE lpad(i::text, 6, '0') || '.' || md5('p' || i) || '.0420' END,
                now() - (i % 365) * interval '1 day', now() - (i % 365) * interval '1 day'
            FROM generate_series(1, {users}) i""",
        ),
        (
            "sessions",
            f"""INSERT INTO sessions (id, session_token, user_id, expires, client_id, scope,
                audience, account_id, upstream_sid, user_agent, created_at, last_used_at,
                previous_hash, rotated_at)
            SELECT pg_temp.bid('s', i), {HEX.format("'t'", "i")}, pg_temp.bid('u', u),
                c + interval '30 days', 'web', 'openid email profile', NULL,
                pg_temp.bid('a', u),
                CASE WHEN i % 3 = 0 THEN md5('sid' || i) END, {AGENT}, c,
                now() - (i % 1209000) * interval '1 second',
                CASE WHEN i % 2 = 0 THEN {HEX.format("'p'", "i")} END,
                CASE WHEN i % 2 = 0 THEN now() - (i % 1209000) * interval '1 second' END
            FROM generate_series(1, {sessions}) i,
                 LATERAL (SELECT 1 + (i::bigint * 48271) % {users} AS u,
                          now() - (i % 2500000) * interval '1 second' AS c) t""",
        ),
        (
            "used_id_tokens",
            f"""INSERT INTO used_id_tokens (replay_key, expires_at)
            SELECT {HEX.format("'r'", "i")},
                   now() + interval '2 hours'
                   + (i * (3600.0 / {n["used_id_tokens"]})) * interval '1 second'
            FROM generate_series(1, {n["used_id_tokens"]}) i""",
        ),
        (
            "audit_events",
            f"""INSERT INTO audit_events (created_at, type, user_id, session_id, client_id, ip,
                user_agent, request_id, detail)
            SELECT now() - interval '365 days'
                   + (i * (31536000.0 / {n["audit_events"]})) * interval '1 second',
                CASE WHEN i % 10 < 7 THEN 'sign_in' WHEN i % 10 < 9 THEN 'sign_out'
                     ELSE 'session_revoked' END,
                pg_temp.bid('u', u), pg_temp.bid('s', 1 + i % {sessions}), 'web',
                '203.0.' || (i % 250) || '.' || (i % 199), {AGENT},
                'a1b2c3d4e5f6-' || to_hex(i),
                jsonb_build_object('provider', 'google', 'created_user', i % 17 = 0,
                                   'reason', CASE WHEN i % 17 = 0 THEN 'created'
                                                  ELSE 'returning' END)
            FROM generate_series(1, {n["audit_events"]}) i,
                 LATERAL (SELECT 1 + (i::bigint * 48271) % {users} AS u) t""",
        ),
        (
            "rate_limits",
            f"""INSERT INTO rate_limits (key, window_start, count, expires_at)
            SELECT 'user:' || pg_temp.bid('u', i),
                   (floor(extract(epoch FROM now()) / 60) * 60)::bigint, 1 + i % 5,
                   now() + interval '1 minute'
            FROM generate_series(1, {n["rate_limits"]}) i""",
        ),
    ]


def backlog_statements(k: int, users: int) -> list[tuple[str, str]]:
    """What the janitor finds after a long outage of it: all past its time."""
    return [
        (
            "sessions",
            f"""INSERT INTO sessions (id, session_token, user_id, expires, client_id, scope,
                user_agent, created_at, last_used_at)
            SELECT pg_temp.bid('old-s', i), {HEX.format("'old-t'", "i")},
                pg_temp.bid('u', 1 + (i::bigint * 48271) % {users}),
                now() - interval '1 day' - (i % 86400) * interval '1 second', 'web',
                'openid email profile', {AGENT},
                now() - interval '31 days' - (i % 86400) * interval '1 second',
                now() - interval '20 days'
            FROM generate_series(1, {k}) i""",
        ),
        (
            "used_id_tokens",
            f"""INSERT INTO used_id_tokens (replay_key, expires_at)
            SELECT {HEX.format("'old-r'", "i")}, now() - interval '1 day' + i * interval '1 ms'
            FROM generate_series(1, {k}) i""",
        ),
        (
            "audit_events",
            f"""INSERT INTO audit_events (created_at, type, user_id, client_id, ip, request_id,
                detail)
            SELECT now() - interval '400 days' + i * interval '10 ms', 'sign_in',
                pg_temp.bid('u', 1 + i % 1000), 'web', '198.51.100.' || (i % 250),
                'old-' || to_hex(i), jsonb_build_object('provider', 'google', 'reason', 'returning')
            FROM generate_series(1, {k}) i""",
        ),
    ]


@dataclass
class Schema:
    """The constraints and indexes of the filled tables, to drop for the fill and make again."""

    constraints: list[tuple[str, str, str, str]] = field(default_factory=list)
    indexes: list[tuple[str, str]] = field(default_factory=list)


async def _schema(connection: asyncpg.Connection) -> Schema:
    names = list(FILLED)
    constraints = await connection.fetch(
        """SELECT c.conrelid::regclass::text AS tbl, c.conname, c.contype::text AS contype,
                  pg_get_constraintdef(c.oid) AS def
           FROM pg_constraint c
           WHERE c.contype IN ('p', 'u', 'f')
             AND (c.conrelid::regclass::text = ANY($1) OR c.confrelid::regclass::text = ANY($1))""",
        names,
    )
    indexes = await connection.fetch(
        """SELECT indexname, indexdef FROM pg_indexes
           WHERE schemaname = 'public' AND tablename = ANY($1)
             AND indexname NOT IN (SELECT conname FROM pg_constraint)""",
        names,
    )
    return Schema(
        [(r["tbl"], r["conname"], r["contype"], r["def"]) for r in constraints],
        [(r["indexname"], r["indexdef"]) for r in indexes],
    )


async def fill(url: str, fraction: float, say: Any) -> dict[str, float]:
    counts = {k: max(10, int(v * fraction)) for k, v in COUNTS.items()}
    timings: dict[str, float] = {}
    connection = await asyncpg.connect(_plain(url))
    try:
        await connection.execute("SET synchronous_commit = off")
        await connection.execute("SET maintenance_work_mem = '512MB'")
        await connection.execute("SET max_parallel_maintenance_workers = 1")
        await connection.execute(ID)
        schema = await _schema(connection)
        for name, _ in schema.indexes:
            await connection.execute(f'DROP INDEX "{name}"')
        for table, name, _, _ in sorted(schema.constraints, key=lambda c: c[2] != "f"):
            await connection.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
        for table, statement in fill_statements(counts):
            started = time.monotonic()
            await connection.execute(statement)
            timings[table] = time.monotonic() - started
            say(f"filled {table} in {timings[table]:.0f} s")
        started = time.monotonic()
        for table, name, _, definition in sorted(schema.constraints, key=lambda c: c[2] == "f"):
            await connection.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
        for _, definition in schema.indexes:
            await connection.execute(definition)
        timings["constraints and indexes"] = time.monotonic() - started
        say(f"constraints and indexes made in {timings['constraints and indexes']:.0f} s")
        started = time.monotonic()
        for table in FILLED:
            await connection.execute(f"VACUUM (ANALYZE) {table}")
        timings["vacuum analyze"] = time.monotonic() - started
        say(f"vacuumed and analysed in {timings['vacuum analyze']:.0f} s")
    finally:
        await connection.close()
    return timings


async def add_backlog(url: str, k: int, users: int) -> float:
    started = time.monotonic()
    connection = await asyncpg.connect(_plain(url))
    try:
        await connection.execute("SET synchronous_commit = off")
        await connection.execute(ID)
        for _, statement in backlog_statements(k, users):
            await connection.execute(statement)
        for table in ("sessions", "used_id_tokens", "audit_events"):
            await connection.execute(f"ANALYZE {table}")
    finally:
        await connection.close()
    return time.monotonic() - started


async def sizes(url: str) -> tuple[int, list[tuple[str, int, int]]]:
    connection = await asyncpg.connect(_plain(url))
    try:
        total = await connection.fetchval("SELECT pg_database_size(current_database())")
        rows = await connection.fetch(
            """SELECT relname, pg_total_relation_size(oid) AS total,
                      pg_indexes_size(oid) AS indexes
               FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace
               ORDER BY 2 DESC"""
        )
    finally:
        await connection.close()
    return int(total), [(r["relname"], int(r["total"]), int(r["indexes"])) for r in rows]


class LockWatch:
    """Samples pg_locks every 5 ms: the longest wait for a heavyweight lock by a backend whose
    statement is a sign-in or a refresh (granted = false, now() - waitstart), told apart by what
    blocks it (pg_blocking_pids): the janitor's deletions, or other requests. The longest waits
    are kept with what was waited on (lock type, relation, mode) and what the blockers were
    doing (backend type, wait event, statement), for the report's notes."""

    def __init__(self, url: str) -> None:
        self.url = _plain(url)
        self.longest_ms = {"janitor": 0.0, "requests": 0.0}
        self.waits = {"janitor": 0, "requests": 0}
        self.samples = 0
        # (pid, waitstart) of each wait seen: its longest sample and what it waited on.
        self.seen: dict[tuple[int, Any], tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._watch()), daemon=True)

    def __enter__(self) -> LockWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def said(self) -> str:
        return ", ".join(
            f"behind {who} {self.longest_ms[who]:.1f} ms ({self.waits[who]} waits seen)"
            for who in ("janitor", "requests")
        )

    def longest(self, n: int = 5) -> list[str]:
        """The `n` longest waits: how long, on what, behind whom."""
        ranked = sorted(self.seen.values(), key=lambda x: -x[0])[:n]
        return [f"{ms:.1f} ms: {what}" for ms, what in ranked]

    async def _watch(self) -> None:
        connection = await asyncpg.connect(self.url)
        try:
            while not self._stop.is_set():
                rows = await connection.fetch(
                    """SELECT a.pid, l.waitstart,
                              extract(epoch FROM clock_timestamp() - l.waitstart) * 1000 AS ms,
                              l.locktype || ' ' || coalesce(l.relation::regclass::text, '')
                                  || ' ' || l.mode AS lock,
                              (SELECT string_agg(b.backend_type || ' ' || coalesce(b.state, '')
                                                 || ' ' || coalesce(b.wait_event_type, '')
                                                 || '/' || coalesce(b.wait_event, '')
                                                 || ' ' || left(b.query, 70), ' | ')
                               FROM pg_stat_activity b
                               WHERE b.pid = ANY (pg_blocking_pids(a.pid))) AS blockers,
                              EXISTS (SELECT 1 FROM pg_stat_activity b
                                      WHERE b.pid = ANY (pg_blocking_pids(a.pid))
                                        AND (b.query LIKE 'DELETE FROM%'
                                             OR b.query LIKE 'UPDATE sessions SET previous%'))
                              AS janitor
                       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                       WHERE NOT l.granted AND l.waitstart IS NOT NULL
                         AND a.datname = current_database()  -- a shared server: ours only
                         AND (a.query LIKE '%identity_sign_in%'
                              OR a.query LIKE '%identity_refresh%')"""
                )
                self.samples += 1
                for row in rows:
                    who = "janitor" if row["janitor"] else "requests"
                    ms = float(row["ms"])
                    self.waits[who] += 1
                    self.longest_ms[who] = max(self.longest_ms[who], ms)
                    key = (int(row["pid"]), row["waitstart"])
                    if ms > self.seen.get(key, (0.0, ""))[0]:
                        self.seen[key] = (ms, f"{row['lock']}, behind {row['blockers']}")
                await asyncio.sleep(0.005)
        finally:
            await connection.close()


class Scale:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.args = bench.args
        self.fraction: float = self.args.fraction
        self.rows = bench.rows
        self.notes = bench.notes
        self.explained: list[str] = []

    def say(self, line: str) -> None:
        print(f"scale: {line}", file=sys.stderr, flush=True)

    def run(self, env: dict[str, str]) -> None:
        env = {**env, "IDENTITY_AUDIT_RETENTION": RETENTION}
        server_url = self.args.database_url
        with database(server_url) as empty, database(server_url) as full:
            started = time.monotonic()
            timings = asyncio.run(fill(full, self.fraction, self.say))
            took = time.monotonic() - started
            counts = ", ".join(f"{k} {int(v * self.fraction):,}" for k, v in COUNTS.items())
            steps = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
            self.notes.append(f"scale: filled {counts} in {took:.0f} s ({steps})")
            self.report_sizes(full)
            if not self.args.no_compare:
                self.compare(env, empty, full)
            k = max(10, int(BACKLOG * self.fraction))
            took = asyncio.run(add_backlog(full, k, max(10, int(COUNTS["users"] * self.fraction))))
            self.notes.append(f"scale: backlog of {k:,} of each kind added in {took:.0f} s")
            if self.args.explain:
                self.explain(full)
            self.pruning(env, full)

    # -- 2. empty against full ----------------------------------------------------------------

    def compare(self, env: dict[str, str], empty: str, full: str) -> None:
        bench = self.bench
        seconds, reps = bench.seconds, bench.reps
        subs_full = [google_sub(i) for i in _returning_indexes(self.fraction, 5000)]
        subs_empty = seed_users(empty, len(subs_full))
        with (
            serve(self._env(env, empty), bench.work) as server_e,
            serve(self._env(env, full), bench.work) as server_f,
        ):
            sides = {
                "empty": (server_e.url, empty, subs_empty),
                "full": (server_f.url, full, subs_full),
            }
            per_run = int(1000 * seconds)
            tokens = {
                side: [
                    bodies(mint(bench.google_key, per_run, subs, f"{side}{i}")) for i in range(reps)
                ]
                for side, (_, _, subs) in sides.items()
            }
            refresh = {
                side: [seed_sessions(url, int(2500 * seconds)) for _ in range(reps)]
                for side, (_, url, _) in sides.items()
            }
            access = {
                side: first_access_token(base, bench.google_key)
                for side, (base, _, _) in sides.items()
            }
            results: dict[tuple[str, str], list[Load]] = {}
            for rep in range(reps):
                order = ("empty", "full") if rep % 2 == 0 else ("full", "empty")
                for side in order:
                    base = sides[side][0]
                    results.setdefault(("exchange", side), []).append(
                        wrk_post(base, "/token", tokens[side][rep], seconds, bench.work)
                    )
                for side in order:
                    base = sides[side][0]
                    form = [
                        urlencode({"grant_type": "refresh_token", "refresh_token": t})
                        for t in refresh[side][rep]
                    ]
                    results.setdefault(("refresh", side), []).append(
                        wrk_post(base, "/token", form, seconds, bench.work)
                    )
                for side in order:
                    base = sides[side][0]
                    header = f"Authorization: Bearer {access[side]}"
                    results.setdefault(("GET /users/me", side), []).append(
                        wrk_get(base + "/users/me", seconds, header)
                    )
        for path in ("exchange", "refresh", "GET /users/me"):
            loads = {side: _median(results[(path, side)]) for side in ("empty", "full")}
            for side, load in loads.items():
                bench.add(f"scale: {path}, {side} database", load)
            ratio = loads["full"].rps / loads["empty"].rps
            met = None if self.args.smoke else ratio >= 0.85
            self.rows.append(
                Row(
                    f"scale: {path}, full / empty",
                    f"p99 {loads['full'].p99_ms / loads['empty'].p99_ms:.2f} x",
                    f"empty {loads['empty'].rps:,.0f}/s",
                    ratio,
                    "≥ 0.85x",
                    met,
                )
            )

    def _env(self, env: dict[str, str], url: str) -> dict[str, str]:
        port = free_port()
        return {
            **env,
            "IDENTITY_DATABASE_URL": url,
            "IDENTITY_PORT": str(port),
            "IDENTITY_ISSUER": f"http://127.0.0.1:{port}",
        }

    # -- 4. pruning under load ----------------------------------------------------------------

    def pruning(self, env: dict[str, str], full: str) -> None:
        bench = self.bench
        seconds = 5.0 if not self.args.smoke else 1.0
        window = 30 if self.args.smoke else 24  # runs of load at most while pruning goes on
        subs = [google_sub(i) for i in _returning_indexes(self.fraction, 5000, offset=7)]
        own = self._env(env, full)
        # The served worker's own janitor is kept out (its rounds of the next hour marked done,
        # as another replica would mark them): the pruning measured is `identity prune`'s,
        # started once the baseline is taken.
        asyncio.run(_rounds_done(full))
        with serve(own, bench.work) as server:
            per_run = int(1200 * seconds)
            runs = iter(
                [
                    bodies(mint(bench.google_key, per_run, subs, f"prune{i}"))
                    for i in range(window + 3)
                ]
            )
            with LockWatch(full) as before:
                baseline = [
                    wrk_post(server.url, "/token", next(runs), seconds, bench.work)
                    for _ in range(3)
                ]
            base = _median(baseline)
            bench.add("scale: exchange before pruning", base)
            command = [sys.executable, "-m", "identity", "prune"]
            during: list[Load] = []
            with LockWatch(full) as watch:
                started = time.monotonic()
                janitor = subprocess.Popen(
                    command,
                    cwd=Path(__file__).resolve().parent.parent,
                    env=own,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                while janitor.poll() is None and len(during) < window:
                    during.append(wrk_post(server.url, "/token", next(runs), seconds, bench.work))
                out, err = janitor.communicate()
                took = time.monotonic() - started
            # What the service said about the failures, if any, for whoever reads the run.
            said = [line for line in server.log_text().splitlines() if '"level":"error"' in line]
            self.notes += [f"scale: pruning phase, service log: {line[:400]}" for line in said[:3]]
            if said:
                self.notes.append(f"scale: pruning phase, {len(said)} error lines in the log")
        worst = max(during, key=lambda x: x.p99_ms) if during else None
        self.notes.append(
            f"scale: `identity prune` took {took:.0f} s and said {out.strip()[-300:]!r}"
            + (f" (stderr {err.strip()[-200:]!r})" if janitor.returncode else "")
        )
        if not during:
            self.notes.append("scale: pruning ended before the first load run")
            return
        if len(during) >= window:
            self.notes.append(f"scale: pruning outlasted the {window} load runs measured")
        middle = _median(during)
        bench.add(f"scale: exchange during pruning ({len(during)} x {seconds:g} s runs)", middle)
        ratio = middle.p99_ms / base.p99_ms
        self.rows.append(
            Row(
                "scale: exchange p99 during pruning / before",
                f"worst run p99 {worst.p99_ms:.1f} ms" if worst else "",
                f"before {base.p99_ms:.1f} ms",
                ratio,
                "≤ 2x",
                None if self.args.smoke else ratio <= 2.0,
            )
        )
        for when, watch_ in (("before pruning", before), ("during pruning", watch)):
            self.rows.append(
                Row(
                    f"scale: longest lock wait of a sign-in or refresh, {when}",
                    watch_.said(),
                    f"{watch_.samples:,} samples of pg_locks",
                )
            )
            self.notes += [f"scale: lock wait {when}, {line}" for line in watch_.longest()]

    # -- 5. sizes -----------------------------------------------------------------------------

    def report_sizes(self, url: str) -> None:
        total, tables = asyncio.run(sizes(url))
        per_million = total / (COUNTS["users"] * self.fraction / 1e6)
        self.rows.append(
            Row(
                "scale: database size after the fill",
                f"{total / 2**30:.2f} GiB",
                f"{per_million / 2**30:.2f} GiB per million users",
            )
        )
        for name, size, indexes in tables:
            if size >= 1 << 20:
                self.rows.append(
                    Row(
                        f"  {name}",
                        f"{size / 2**20:,.0f} MiB",
                        f"indexes {indexes / 2**20:,.0f} MiB",
                    )
                )

    # -- 3. explain ---------------------------------------------------------------------------

    def explain(self, url: str) -> None:
        from bench.explain import explain_all  # the statements, beside this phase

        for line in asyncio.run(explain_all(url, self.fraction)):
            print(line)


async def _rounds_done(url: str) -> None:
    connection = await asyncpg.connect(_plain(url))
    try:
        await connection.execute(
            """INSERT INTO rate_limits (key, window_start, count, expires_at)
               SELECT 'janitor:round', r, 1, to_timestamp(r + 600)
               FROM generate_series((floor(extract(epoch FROM now()) / 600) * 600)::bigint,
                                    (floor(extract(epoch FROM now()) / 600) * 600)::bigint
                                    + 3600, 600) r
               ON CONFLICT DO NOTHING"""
        )
    finally:
        await connection.close()


def _returning_indexes(fraction: float, n: int, offset: int = 0) -> list[int]:
    """Indexes of filled users with a Google account, spread over the whole table."""
    users = max(10, int(COUNTS["users"] * fraction))
    picked: list[int] = []
    i = offset
    while len(picked) < n:
        i += 1
        index = 1 + (i * 7919 + offset) % users
        if index % 20 < 16:
            picked.append(index)
    return picked


def _median(loads: list[Load]) -> Load:
    return Load(
        rps=statistics.median(x.rps for x in loads),
        p50_ms=statistics.median(x.p50_ms for x in loads),
        p99_ms=statistics.median(x.p99_ms for x in loads),
        failed=sum(x.failed for x in loads),
        exhausted=sum(x.exhausted for x in loads),
    )
