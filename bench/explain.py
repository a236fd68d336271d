"""EXPLAIN (ANALYZE, BUFFERS) of every hot statement on the filled database (bench/scale.py).

The statements inside identity_sign_in and identity_refresh are what PostgreSQL plans when the
functions run, so they are shown by calling the functions with auto_explain on
(log_nested_statements: each inner statement's plan, as executed); the others are the texts the
code runs (identity.accounts.sessions, identity.accounts.limits) and the janitor's batch
statements (identity.store.pruning) written out. Everything runs in one transaction that is
rolled back: the database is left as it was.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import asyncpg

from bench.run import _plain
from identity.accounts.limits import COUNT, INCREMENT
from identity.accounts.sessions import _ALIVE, _PROFILE
from identity.store.pruning import PRUNE_BATCH

SIGN_IN = """SELECT * FROM identity_sign_in(
    p_replay_key => $1, p_replay_expires => now() + interval '1 hour', p_provider => 'google',
    p_account_key => $2, p_email => $3, p_authoritative => true, p_name => 'Person',
    p_picture => NULL, p_client_id => 'web', p_scope => 'openid email profile',
    p_session_id => $4, p_refresh_hash => $5, p_session_expires => now() + interval '30 days',
    p_user_agent => 'bench', p_now => now(), p_new_user_id => $6, p_new_account_id => $7,
    p_lock_key => $8, p_lock_limit => 60, p_lock_window => $9, p_budget_limit => 30,
    p_budget_window => $9, p_budget_expires => now() + interval '1 minute',
    p_access_token => NULL, p_refresh_token => NULL, p_id_token => NULL, p_expires_at => NULL,
    p_token_type => NULL, p_token_scope => NULL, p_session_state => NULL,
    p_audit_client => 'web', p_ip => '127.0.0.1', p_audit_agent => 'bench',
    p_request_id => 'explain')"""
REFRESH = """SELECT * FROM identity_refresh(
    p_hash => $1, p_client_id => 'web', p_scope => NULL, p_successor => $2,
    p_sealed => '\\x00'::bytea, p_interval => 10, p_now => now(),
    p_idle_since => now() - interval '14 days', p_lock_prefix => 'fail:web:user:',
    p_lock_limit => 60, p_lock_window => $3, p_budget_limit => 30, p_budget_window => $3,
    p_budget_expires => now() + interval '1 minute', p_audit_client => 'web',
    p_ip => '127.0.0.1', p_audit_agent => 'bench', p_request_id => 'explain')"""
# The janitor's statements as identity.store.pruning builds them (one batch each), and the
# sealed successors forgotten every round (identity.accounts.sessions.forget_sealed).
JANITOR = {
    "prune used_id_tokens (one batch)": f"""DELETE FROM used_id_tokens WHERE replay_key IN (
        SELECT replay_key FROM used_id_tokens WHERE expires_at < now()
        ORDER BY expires_at LIMIT {PRUNE_BATCH} FOR UPDATE SKIP LOCKED)""",
    "prune sessions past their end (one batch)": f"""DELETE FROM sessions WHERE id IN (
        SELECT id FROM sessions WHERE expires <= now()
        ORDER BY expires LIMIT {PRUNE_BATCH} FOR UPDATE SKIP LOCKED)""",
    "prune sessions idle too long (one batch)": f"""DELETE FROM sessions WHERE id IN (
        SELECT id FROM sessions WHERE last_used_at <= now() - interval '1209600 seconds'
        ORDER BY last_used_at LIMIT {PRUNE_BATCH} FOR UPDATE SKIP LOCKED)""",
    "prune audit_events (one batch)": f"""DELETE FROM audit_events WHERE id IN (
        SELECT id FROM audit_events WHERE created_at < now() - interval '31622400 seconds'
        ORDER BY created_at LIMIT {PRUNE_BATCH} FOR UPDATE SKIP LOCKED)""",
    "prune rate_limits (one batch)": f"""DELETE FROM rate_limits
        WHERE (key, window_start) IN (
        SELECT key, window_start FROM rate_limits WHERE expires_at < now()
        ORDER BY expires_at LIMIT {PRUNE_BATCH} FOR UPDATE SKIP LOCKED)""",
    "forget sealed successors": """UPDATE sessions SET previous_sealed = NULL
        WHERE previous_sealed IS NOT NULL AND rotated_at <= now() - interval '10 seconds'""",
}


def bid(kind: str, i: int) -> str:
    """bench/scale.py's ids, computed here as the fill computed them in SQL."""
    raw = base64.b64encode(hashlib.md5(f"{kind}{i}".encode()).digest()).decode()  # noqa: S324
    return raw.replace("+", "-").replace("/", "_").replace("=", "")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def explain_all(url: str, fraction: float) -> list[str]:
    users = max(10, int(1_000_000 * fraction))
    sessions = max(10, int(2_000_000 * fraction))
    lines: list[str] = []
    connection = await asyncpg.connect(_plain(url))
    logged: list[str] = []
    connection.add_log_listener(lambda _c, message: logged.append(str(message)))

    async def nested(title: str, statement: str, *args: Any) -> None:
        logged.clear()
        await connection.fetch(statement, *args)
        lines.append(f"== {title}")
        lines.extend(_plans(logged))

    async def direct(title: str, statement: str, *args: Any) -> None:
        rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", *args)
        lines.append(f"== {title}")
        lines.append("   " + " ".join(statement.split()))
        lines.extend("   " + r[0] for r in rows)

    window = int(time.time() // 60 * 60)
    try:
        async with connection.transaction():
            await connection.execute("LOAD 'auto_explain'")
            for setting, value in (
                ("auto_explain.log_min_duration", "0"),
                ("auto_explain.log_analyze", "on"),
                ("auto_explain.log_buffers", "on"),
                ("auto_explain.log_timing", "on"),
                ("auto_explain.log_nested_statements", "on"),
                ("client_min_messages", "log"),
            ):
                await connection.execute(f"SET LOCAL {setting} = '{value}'")
            i = users // 3 // 20 * 20 + 1  # a filled user with a Google account (i % 20 < 16)
            sub = f"1{i:020d}"
            await nested(
                "identity_sign_in, a returning person (failure limit and budget on)",
                SIGN_IN,
                sha("explain-r1"),
                sub,
                f"{sub}@gmail.com",
                bid("x-s", 1),
                sha("explain-t1"),
                bid("x-u", 1),
                bid("x-a", 1),
                f"fail:web:google:{sub}",
                window,
            )
            await nested(
                "identity_sign_in, a first sign-in",
                SIGN_IN,
                sha("explain-r2"),
                "new-person-1",
                "new-person-1@gmail.com",
                bid("x-s", 2),
                sha("explain-t2"),
                bid("x-u", 2),
                bid("x-a", 2),
                "fail:web:google:new",
                window,
            )
            j = sessions // 2 + 1  # odd: never rotated; its hash is the current token's
            await nested(
                "identity_refresh, the current token (rotated)",
                REFRESH,
                sha(f"t{j}"),
                sha("explain-successor"),
                window,
            )
            await nested(
                "identity_refresh, an earlier token (the parent lookup, then the rotated ones)",
                REFRESH,
                sha(f"p{j + 1}"),
                sha("explain-successor-2"),
                window,
            )
            await connection.execute("SET LOCAL auto_explain.log_min_duration = '-1'")
            u = 1 + (j * 48271) % users
            now = time.time()
            bounds = (_ts(now), _ts(now - 1_209_600))
            await direct(
                "GET /users/me: the profile of a live session",
                _PROFILE,
                bid("s", j),
                bid("u", u),
                *bounds,
            )
            await direct(
                "the session check (protected routes)", _ALIVE, bid("s", j), bid("u", u), *bounds
            )
            await direct("failure limit: the check", COUNT, f"user:{bid('u', 5)}", window)
            await direct(
                "failure limit: the count", INCREMENT, "fail:ip:203.0.113.9", window, _ts(now + 60)
            )
            for title, statement in JANITOR.items():
                await direct(title, statement)
            raise _RolledBack
    except _RolledBack:
        pass
    finally:
        await connection.close()
    return lines


class _RolledBack(Exception):
    pass


def _ts(seconds: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC)


def _plans(messages: list[str]) -> list[str]:
    """auto_explain's messages: each inner statement's text and plan, as logged, indented (the
    call itself left out: its inner statements are the plans that matter)."""
    out: list[str] = []
    for message in messages:
        if "Query Text:" not in message or "FROM identity_" in message.split("\n")[1]:
            continue
        out.extend("   " + line for line in message.splitlines() if line.strip())
    return out
