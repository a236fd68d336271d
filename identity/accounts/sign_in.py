"""The sign-in transaction: who a verified id_token is, and a new session for them.

The rules are in docs/accounts.md; in short, in one transaction:

 1. the failure limit of this caller, when it is checked here, is not reached ("locked");
 2. an account (provider, account key) exists → its user (disabled: refused, an audit event);
    otherwise the token's address decides: held verified by a user → linked to that user when
    the provider is authoritative for it, else "conflict" (an audit event); held unverified →
    a new user, who takes the address from its holder when the provider is authoritative;
    nobody holds it → a new user (the address verified when the provider is authoritative);
 3. the id_token is remembered (a second use: "replayed");
 4. the user's success budget is counted ("rate_limited", which forgets the id_token again);
 5. profile refresh, provider tokens field by field, the session, the audit events.

Two implementations, on purpose: PostgreSQL runs these steps as one call of the function
`identity_sign_in` (installed by migration 0005: one round trip); SQLite, the embedded default,
runs them below as statements in one write transaction. The test suite runs every rule on both.
Two sign-ins of one new person racing on two replicas meet a unique constraint; the loser's
transaction is rolled back whole and retried, and finds the winner's rows.

Longer than most modules: one transaction's rules, with both database paths side by side so
that a change to one is seen next to the other.
"""

from __future__ import annotations

import logging
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Literal

import asyncpg
import orjson
from sqlalchemy.exc import IntegrityError

from identity.clock import as_utc, utc
from identity.store.database import Database, Row, Sql
from identity.store.models import AccountPublic, UserRecord, new_id
from identity.tokens.id_tokens import VerifiedIdentity

from . import audit
from .limits import INCREMENT, Window, reached

logger = logging.getLogger("identity.sign_in")
_ATTEMPTS = 4
Outcome = Literal["ok", "replayed", "conflict", "disabled", "locked", "rate_limited"]
USER_COLUMNS = (
    "id, name, email, email_verified, image, pending_email, name_edited, image_edited, "
    "email_edited, disabled_at, created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class ProviderTokens:
    """Provider tokens from the callback, already sealed; None leaves the stored value."""

    access_token: str | None = None
    refresh_token: str | None = None
    id_token: str | None = None
    expires_at: int | None = None
    token_type: str | None = None
    scope: str | None = None
    session_state: str | None = None

    def given(self) -> bool:
        return any(value is not None for value in astuple(self))


@dataclass(frozen=True, slots=True)
class SignInRequest:
    identity: VerifiedIdentity
    client_id: str
    scope: str
    session_id: str
    refresh_hash: str
    session_expires: datetime
    user_agent: str | None
    now: datetime
    context: audit.Context
    lock_key: str | None = None  # the caller's failure-limit key, when checked in here
    lock: Window | None = None
    budget: Window | None = None  # IDENTITY_RATE_LIMIT_SUBJECT
    provider_tokens: ProviderTokens | None = None


@dataclass(frozen=True, slots=True)
class SignInResult:
    outcome: Outcome
    user: UserRecord | None = None
    accounts: tuple[AccountPublic, ...] = ()
    created_user: bool = False


class SignIns:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def sign_in(self, request: SignInRequest) -> SignInResult:
        for attempt in range(_ATTEMPTS):
            try:
                async with self._db.hot() as sql:
                    if self._db.postgres:
                        return await _postgres(sql, request)
                    return await _sqlite(sql, request)
            except (
                IntegrityError,
                asyncpg.IntegrityConstraintViolationError,
                asyncpg.SerializationError,
                _Retry,
            ):
                # A concurrent sign-in (or a disable) committed first; nothing of this attempt
                # was written. Start over: the retry finds its rows.
                if attempt == _ATTEMPTS - 1:
                    raise
                logger.info("sign-in raced a concurrent change; retrying")
        raise AssertionError("unreachable")


class _Retry(Exception):
    """The user was disabled between our read and our write: roll back, decide again."""


_CALL = """
SELECT outcome, created_user, r_id AS id, r_name AS name, r_email AS email,
       r_email_verified AS email_verified, r_image AS image, r_pending_email AS pending_email,
       r_created_at AS created_at, r_updated_at AS updated_at, r_accounts AS accounts
FROM identity_sign_in($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                      $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30,
                      $31, $32, $33, $34)
"""


async def _postgres(sql: Sql, r: SignInRequest) -> SignInResult:
    i, t = r.identity, r.provider_tokens or ProviderTokens()
    row = await sql.fetchone(
        _CALL,
        i.replay_key,
        i.replay_expires,
        i.provider,
        i.account_key,
        i.email,
        i.authoritative,
        i.name,
        i.picture,
        r.client_id,
        r.scope,
        r.session_id,
        r.refresh_hash,
        r.session_expires,
        r.user_agent,
        r.now,
        new_id(),
        new_id(),
        r.lock_key,
        r.lock.limit.count if r.lock else None,
        r.lock.start if r.lock else None,
        r.budget.limit.count if r.budget else None,
        r.budget.start if r.budget else None,
        utc(r.budget.ends) if r.budget else None,
        t.access_token,
        t.refresh_token,
        t.id_token,
        t.expires_at,
        t.token_type,
        t.scope,
        t.session_state,
        *r.context.fields(),
    )
    if row["outcome"] != "ok":
        return SignInResult(row["outcome"])
    accounts = tuple(
        AccountPublic(provider=p, provider_account_id=k) for p, k in orjson.loads(row["accounts"])
    )
    return SignInResult("ok", UserRecord.of(row), accounts, row["created_user"])


# -- SQLite: the same steps as statements ---------------------------------------------------

_BY_ACCOUNT = f"""
SELECT a.id AS account_id, {", ".join("u." + c.strip() for c in USER_COLUMNS.split(","))}
FROM accounts a JOIN users u ON u.id = a.user_id
WHERE a.provider = $1 AND a.provider_account_id = $2
"""
_BY_EMAIL = f"SELECT {USER_COLUMNS} FROM users WHERE email = $1"
REMEMBER_REPLAY = """
INSERT INTO used_id_tokens (replay_key, expires_at) VALUES ($1, $2)
ON CONFLICT DO NOTHING RETURNING replay_key
"""
_FORGET = "DELETE FROM used_id_tokens WHERE replay_key = $1"
_RELEASE = """
UPDATE users SET email = NULL, updated_at = $2 WHERE id = $1 AND email_verified IS NULL
RETURNING id
"""
_INSERT_USER = f"""
INSERT INTO users (id, name, email, email_verified, image, name_edited, image_edited,
                   email_edited, last_sign_in_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, false, false, false, $6, $6, $6)
RETURNING {USER_COLUMNS}
"""
_INSERT_ACCOUNT = """
INSERT INTO accounts (id, user_id, type, provider, provider_account_id, created_at, updated_at)
VALUES ($1, $2, 'oidc', $3, $4, $5, $5)
"""
_UPDATE_USER = f"""
UPDATE users SET name = $2, image = $3, email = $4, email_verified = $5, pending_email = $6,
                 updated_at = $7, last_sign_in_at = $8
WHERE id = $1 AND disabled_at IS NULL
RETURNING {USER_COLUMNS}
"""
_FORGET_MAIL_TOKENS = "DELETE FROM verification_tokens WHERE user_id = $1 AND identifier = $2"
_PROVIDER_TOKENS = """
UPDATE accounts SET access_token = COALESCE($2, access_token),
    refresh_token = COALESCE($3, refresh_token), id_token = COALESCE($4, id_token),
    expires_at = COALESCE($5, expires_at), token_type = COALESCE($6, token_type),
    scope = COALESCE($7, scope), session_state = COALESCE($8, session_state), updated_at = $9
WHERE id = $1
"""
_INSERT_SESSION = """
INSERT INTO sessions (id, session_token, user_id, expires, client_id, scope, user_agent,
                      created_at, last_used_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
"""
ACCOUNTS_OF = """
SELECT provider, provider_account_id FROM accounts WHERE user_id = $1 ORDER BY created_at, id
"""


async def _sqlite(sql: Sql, r: SignInRequest) -> SignInResult:
    i, now = r.identity, r.now
    if r.lock_key is not None and r.lock is not None and await reached(sql, r.lock_key, r.lock):
        return SignInResult("locked")

    user = await sql.fetchrow(_BY_ACCOUNT, i.provider, i.account_key)
    account_id = user["account_id"] if user is not None else None
    holder = None
    if user is None and i.email is not None:
        holder = await sql.fetchrow(_BY_EMAIL, i.email)
    how = "returning"
    if holder is not None and holder["email_verified"] is not None:
        if not i.authoritative:  # the address is someone's, and this provider cannot vouch
            await _refused(sql, r, "account_conflict", holder["id"])
            return SignInResult("conflict")
        user, how = holder, "linked"
    if user is not None and user["disabled_at"] is not None:
        await _refused(sql, r, "disabled", user["id"])
        return SignInResult("disabled")

    if await sql.fetchrow(REMEMBER_REPLAY, i.replay_key, i.replay_expires) is None:
        return SignInResult("replayed")
    if user is not None and await _over_budget(sql, r, user["id"]):
        await sql.fetch(_FORGET, i.replay_key)  # a 429 does not spend the id_token
        return SignInResult("rate_limited")

    created = user is None
    if user is None:
        user, account_id = await _create(sql, r, holder)
        await _over_budget(sql, r, user["id"])  # a first sign-in counts too (1: never over)
    else:
        if account_id is None:  # linked by verified address
            account_id = new_id()
            await sql.fetch(_INSERT_ACCOUNT, account_id, user["id"], i.provider, i.account_key, now)
        user = await _refresh(sql, r, user)
    if r.provider_tokens is not None and r.provider_tokens.given():
        t = r.provider_tokens
        await sql.fetch(
            _PROVIDER_TOKENS,
            account_id,
            t.access_token,
            t.refresh_token,
            t.id_token,
            t.expires_at,
            t.token_type,
            t.scope,
            t.session_state,
            now,
        )
    await sql.fetch(
        _INSERT_SESSION,
        r.session_id,
        r.refresh_hash,
        user["id"],
        r.session_expires,
        r.client_id,
        r.scope,
        r.user_agent,
        now,
    )
    await audit.record(
        sql,
        "sign_in",
        at=now,
        context=r.context,
        user_id=user["id"],
        session_id=r.session_id,
        provider=i.provider,
        created_user=created,
        reason="created" if created else how,
    )
    rows = await sql.fetch(ACCOUNTS_OF, user["id"])
    accounts = tuple(
        AccountPublic(provider=a["provider"], provider_account_id=a["provider_account_id"])
        for a in rows
    )
    return SignInResult("ok", UserRecord.of(user), accounts, created)


async def _over_budget(sql: Sql, r: SignInRequest, user_id: str) -> bool:
    """Count one success against the user's IDENTITY_RATE_LIMIT_SUBJECT; whether it is over."""
    if r.budget is None:
        return False
    row = await sql.fetchone(INCREMENT, f"user:{user_id}", r.budget.start, utc(r.budget.ends))
    return bool(row["count"] > r.budget.limit.count)


async def _create(sql: Sql, r: SignInRequest, holder: Row | None) -> tuple[Row, str]:
    """A new person. An unverified holder loses the address when the provider proves it."""
    i, now = r.identity, r.now
    email = i.email
    if holder is not None:  # held, but not verified (a verified holder was linked or refused)
        if i.authoritative and await sql.fetchrow(_RELEASE, holder["id"], now) is not None:
            await _released(sql, r, holder["id"])
        else:
            email = None  # an address nobody proved reserves nothing, but is not taken either
    verified = now if email is not None and i.authoritative else None
    user = await sql.fetchone(_INSERT_USER, new_id(), i.name, email, verified, i.picture, now)
    account_id = new_id()
    await sql.fetch(_INSERT_ACCOUNT, account_id, user["id"], i.provider, i.account_key, now)
    return user, account_id


async def _refresh(sql: Sql, r: SignInRequest, user: Row) -> Row:
    """Rule 1: name and picture from the token, the address when the provider proves it."""
    i, now = r.identity, r.now
    name = i.name if not user["name_edited"] and i.name else user["name"]
    image = i.picture if not user["image_edited"] and i.picture else user["image"]
    email, verified, pending = user["email"], user["email_verified"], user["pending_email"]
    if i.authoritative and i.email is not None and not user["email_edited"]:
        other = await sql.fetchrow(_BY_EMAIL, i.email) if i.email != email else None
        if i.email == email:
            verified = verified or now  # proven now, if it was not before
        elif other is None or other["email_verified"] is None:
            if other is not None and other["id"] != user["id"]:
                if await sql.fetchrow(_RELEASE, other["id"], now) is None:
                    raise _Retry  # verified meanwhile
                await _released(sql, r, other["id"])
            if email is not None:  # the old address's mail tokens must not verify it any more
                await sql.fetch(_FORGET_MAIL_TOKENS, user["id"], email)
            email, verified = i.email, now
            pending = None if pending == i.email else pending
    changed = (name, image, email, verified, pending) != (
        user["name"],
        user["image"],
        user["email"],
        user["email_verified"],
        user["pending_email"],
    )
    updated = await sql.fetchrow(
        _UPDATE_USER,
        user["id"],
        name,
        image,
        email,
        as_utc(verified) if verified else None,
        pending,
        now if changed else as_utc(user["updated_at"]),
        now,
    )
    if updated is None:
        raise _Retry  # disabled since we read it: decide again
    return updated


async def _refused(sql: Sql, r: SignInRequest, reason: str, user_id: str) -> None:
    await audit.record(
        sql,
        "sign_in_refused",
        at=r.now,
        context=r.context,
        user_id=user_id,
        provider=r.identity.provider,
        reason=reason,
    )


async def _released(sql: Sql, r: SignInRequest, user_id: str) -> None:
    await audit.record(
        sql,
        "email_released",
        at=r.now,
        context=r.context,
        user_id=user_id,
        provider=r.identity.provider,
        reason="proven_by_provider",
    )
