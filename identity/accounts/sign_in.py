"""The sign-in transaction: who a verified id_token is, and a new session for them.

The rules are in docs/accounts.md; in short, in one transaction, these steps (numbered and named
alike in `_sqlite` below and in identity/store/sql/identity_sign_in.sql):

 1. The failure limit of this caller, when it is checked here ("locked").
 2. Who it is: an account (provider, account key) → its user; else a user holding the token's
    address verified → linked to them when the provider is authoritative for it, the holder
    has no account of this provider and a provider (not our mail) proved their address, else
    "conflict" (an audit event with the reason). Refused, each with an audit event: a disabled
    user ("disabled"), a suspended account ("suspended"), an id_token a provider's signal
    revoked ("revoked": issued before the signal ended the account's sessions; cutoffs.py).
 3. Single use: the id_token is remembered ("replayed").
 4. The user's success budget ("rate_limited", which forgets the id_token again).
 5. The user: a new one (the address verified, and taken from an unverified holder, when the
    provider is authoritative for it), or the profile refreshed from the token; who proved
    the address is recorded (`email_verified_by`).
 6. The provider tokens, field by field.
 7. The session (its audience, account, provider `sid`), the sign_in event, its notices.
 8. The answer: the user and their accounts ("ok").

Two implementations, on purpose: PostgreSQL runs these steps as one call of the function
`identity_sign_in` (one round trip, its arguments passed by name from `ARGUMENTS`); SQLite, the
embedded default, runs them below as statements in one write transaction. The test suite runs
every rule on both. Two sign-ins of one new person racing on two replicas meet a unique
constraint; the loser's transaction is rolled back whole and retried, and finds the winner's rows.

Longer than most modules: one transaction's rules, both database paths side by side.
"""

from __future__ import annotations

import logging
from dataclasses import astuple, dataclass, replace
from datetime import datetime
from typing import Literal

import asyncpg
import orjson
from sqlalchemy.exc import IntegrityError

from identity.clock import as_utc
from identity.store.database import Database, Row, Sql
from identity.store.functions import Arguments, Call
from identity.store.models import VERIFIED_BY_MAIL, new_id
from identity.store.shapes import AccountPublic, UserRecord
from identity.tokens.id_tokens import VerifiedIdentity
from identity.tokens.provider_tokens import ProviderTokens

from . import audit, cutoffs, outbox
from .limits import WINDOW_ARGUMENTS, Window, over_budget, reached

logger = logging.getLogger("identity.sign_in")
_ATTEMPTS = 4
Outcome = Literal[
    "ok", "replayed", "conflict", "disabled", "suspended", "revoked", "locked", "rate_limited"
]
USER_COLUMNS = (
    "id, name, email, email_verified, email_verified_by, image, pending_email, name_edited, "
    "image_edited, email_edited, disabled_at, created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class SignInRequest:
    identity: VerifiedIdentity
    client_id: str
    scope: str
    audience: str | None  # the audience granted, kept on the session; None: the default
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
    notify: list[str] | None = None  # '<event> <destination>' pairs (Notices.sign_in)


_NO_TOKENS = ProviderTokens()

# identity_sign_in's parameters in order, each with where its value comes from: the call passes
# them by name, and tests/test_functions.py holds these names to the installed function's.
ARGUMENTS: Arguments[SignInRequest] = (
    ("p_replay_key", lambda r: r.identity.replay_key),
    ("p_replay_expires", lambda r: r.identity.replay_expires),
    ("p_provider", lambda r: r.identity.provider),
    ("p_account_key", lambda r: r.identity.account_key),
    ("p_email", lambda r: r.identity.email),
    ("p_authoritative", lambda r: r.identity.authoritative),
    ("p_name", lambda r: r.identity.name),
    ("p_picture", lambda r: r.identity.picture),
    ("p_client_id", lambda r: r.client_id),
    ("p_scope", lambda r: r.scope),
    ("p_session_id", lambda r: r.session_id),
    ("p_refresh_hash", lambda r: r.refresh_hash),
    ("p_session_expires", lambda r: r.session_expires),
    ("p_user_agent", lambda r: r.user_agent),
    ("p_now", lambda r: r.now),
    ("p_new_user_id", lambda _: new_id()),
    ("p_new_account_id", lambda _: new_id()),
    ("p_lock_key", lambda r: r.lock_key),
    *WINDOW_ARGUMENTS,
    ("p_access_token", lambda r: (r.provider_tokens or _NO_TOKENS).access_token),
    ("p_refresh_token", lambda r: (r.provider_tokens or _NO_TOKENS).refresh_token),
    ("p_id_token", lambda r: (r.provider_tokens or _NO_TOKENS).id_token),
    ("p_expires_at", lambda r: (r.provider_tokens or _NO_TOKENS).expires_at),
    ("p_token_type", lambda r: (r.provider_tokens or _NO_TOKENS).token_type),
    ("p_token_scope", lambda r: (r.provider_tokens or _NO_TOKENS).scope),
    ("p_session_state", lambda r: (r.provider_tokens or _NO_TOKENS).session_state),
    *audit.CONTEXT_ARGUMENTS,
    ("p_audience", lambda r: r.audience),
    ("p_upstream_sid", lambda r: r.identity.upstream_sid),
    ("p_notify", lambda r: r.notify),
    ("p_issued_at", lambda r: r.identity.issued_at),
)
CALL = Call(
    "identity_sign_in",
    ARGUMENTS,
    columns="outcome, created_user, r_id AS id, r_name AS name, r_email AS email, "
    "r_email_verified AS email_verified, r_image AS image, r_pending_email AS pending_email, "
    "r_created_at AS created_at, r_updated_at AS updated_at, r_accounts AS accounts, "
    "r_reason AS reason",
)


@dataclass(frozen=True, slots=True)
class SignInResult:
    outcome: Outcome
    user: UserRecord | None = None
    accounts: tuple[AccountPublic, ...] = ()
    created_user: bool = False
    reason: str | None = None  # why a "conflict": the audit event's reason code


class SignIns:
    def __init__(self, database: Database, notices: outbox.Notices = outbox.NOBODY) -> None:
        self._db = database
        self._notify = notices.sign_in()  # None: nobody listens, and a sign-in writes no row

    async def sign_in(self, request: SignInRequest) -> SignInResult:
        if self._notify is not None:
            request = replace(request, notify=self._notify)
        for attempt in range(_ATTEMPTS):
            try:
                async with self._db.hot() as sql:
                    if self._db.postgres:
                        return await _postgres(sql, request)
                    return await _sqlite(sql, request)
            except (
                IntegrityError,
                asyncpg.IntegrityConstraintViolationError,
                asyncpg.TransactionRollbackError,  # serialization failure, deadlock
                _Retry,
            ):
                # A concurrent sign-in or disable committed first (or an unlink deadlocked with
                # us); nothing of this attempt was written. Start over: the retry finds its rows.
                if attempt == _ATTEMPTS - 1:
                    raise
                logger.info("sign-in raced a concurrent change; retrying")
        raise AssertionError("unreachable")


class _Retry(Exception):
    """The user was disabled between our read and our write: roll back, decide again."""


async def _postgres(sql: Sql, r: SignInRequest) -> SignInResult:
    row = await CALL.fetchone(sql, r)  # steps 1-8 in one statement
    if row["outcome"] != "ok":
        return SignInResult(row["outcome"], reason=row["reason"])
    accounts = tuple(
        AccountPublic(provider=p, provider_account_id=k) for p, k in orjson.loads(row["accounts"])
    )
    return SignInResult("ok", UserRecord.of(row), accounts, row["created_user"])


# -- SQLite: the same steps as statements ---------------------------------------------------

_BY_ACCOUNT = f"""
SELECT a.id AS account_id, a.suspended_at, a.sessions_revoked_at,
       {", ".join("u." + c.strip() for c in USER_COLUMNS.split(","))}
FROM accounts a JOIN users u ON u.id = a.user_id
WHERE a.provider = $1 AND a.provider_account_id = $2
"""
_BY_EMAIL = f"SELECT {USER_COLUMNS} FROM users WHERE email = $1"
_HAS_PROVIDER = "SELECT 1 AS found FROM accounts WHERE user_id = $1 AND provider = $2"
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
INSERT INTO users (id, name, email, email_verified, email_verified_by, image, name_edited,
                   image_edited, email_edited, last_sign_in_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, false, false, false, $7, $7, $7)
RETURNING {USER_COLUMNS}
"""
_INSERT_ACCOUNT = """
INSERT INTO accounts (id, user_id, type, provider, provider_account_id, created_at, updated_at)
VALUES ($1, $2, 'oidc', $3, $4, $5, $5)
"""
_UPDATE_USER = f"""
UPDATE users SET name = $2, image = $3, email = $4, email_verified = $5, email_verified_by = $6,
                 pending_email = $7, updated_at = $8, last_sign_in_at = $9
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
INSERT INTO sessions (id, session_token, user_id, expires, client_id, scope, audience,
                      account_id, upstream_sid, user_agent, created_at, last_used_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
"""
ACCOUNTS_OF = """
SELECT provider, provider_account_id FROM accounts WHERE user_id = $1 ORDER BY created_at, id
"""


async def _sqlite(sql: Sql, r: SignInRequest) -> SignInResult:
    i, now = r.identity, r.now
    # 1. The failure limit of this caller, when it is checked here ("locked").
    if r.lock_key is not None and r.lock is not None and await reached(sql, r.lock_key, r.lock):
        return SignInResult("locked")

    # 2. Who it is: the account, or else the token's address ("conflict", "disabled",
    # "suspended").
    user = await sql.fetchrow(_BY_ACCOUNT, i.provider, i.account_key)
    account_id = user["account_id"] if user is not None else None
    holder = None
    if user is None and i.email is not None:
        # (PostgreSQL reads in one statement at a time and starts over when this very account
        # appeared between the two reads; here the whole step runs under BEGIN IMMEDIATE.)
        holder = await sql.fetchrow(_BY_EMAIL, i.email)
    how = "returning"
    if holder is not None and holder["email_verified"] is not None:
        refusal = await _link_refusal(sql, r, holder)
        if refusal is not None:
            await _event(sql, r, "sign_in_refused", refusal, holder["id"])
            return SignInResult("conflict", reason=refusal)
        user, how = holder, "linked"
    if user is not None and user["disabled_at"] is not None:
        await _event(sql, r, "sign_in_refused", "disabled", user["id"])
        return SignInResult("disabled")
    if user is not None and how == "returning" and user["suspended_at"] is not None:
        # This account only: the user's other accounts still sign in.
        await _event(sql, r, "sign_in_refused", "suspended", user["id"])
        return SignInResult("suspended")
    if await cutoffs.revoked(sql, i, user if how == "returning" else None):
        await _event(sql, r, "sign_in_refused", "revoked", user["id"] if user else None)
        return SignInResult("revoked")

    # 3. Single use: the id_token is remembered ("replayed").
    if await sql.fetchrow(REMEMBER_REPLAY, i.replay_key, i.replay_expires) is None:
        return SignInResult("replayed")

    # 4. The user's success budget ("rate_limited"; a 429 does not spend the id_token).
    if user is not None and await over_budget(sql, user["id"], r.budget):
        await sql.fetch(_FORGET, i.replay_key)
        return SignInResult("rate_limited")

    # 5. The user: a new one, or the profile refreshed from the token.
    created = user is None
    if user is None:
        user, account_id = await _create(sql, r, holder)
        await over_budget(sql, user["id"], r.budget)  # 4. for a first sign-in too (1: never over)
    else:
        if account_id is None:  # linked by verified address
            account_id = new_id()
            await sql.fetch(_INSERT_ACCOUNT, account_id, user["id"], i.provider, i.account_key, now)
        user = await _refresh(sql, r, user)

    # 6. The provider tokens, field by field (a field not given keeps its value).
    if r.provider_tokens is not None and r.provider_tokens.given():  # $2-$8: its fields, in order
        await sql.fetch(_PROVIDER_TOKENS, account_id, *astuple(r.provider_tokens), now)

    # 7. The session and the sign_in audit event.
    bound = (r.session_id, r.refresh_hash, user["id"], r.session_expires, r.client_id, r.scope)
    started = (r.audience, account_id, i.upstream_sid, r.user_agent, now)
    await sql.fetch(_INSERT_SESSION, *bound, *started)  # $1-$11, in order
    event_id = await audit.record(
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
    if r.notify:  # only what someone subscribes to
        ids = (user["id"], account_id, i.provider)
        await outbox.signed_in(sql, r.notify, ids, created, how == "linked", now, event_id)

    # 8. The answer: the user and their accounts ("ok").
    rows = await sql.fetch(ACCOUNTS_OF, user["id"])
    accounts = tuple(
        AccountPublic(provider=a["provider"], provider_account_id=a["provider_account_id"])
        for a in rows
    )
    return SignInResult("ok", UserRecord.of(user), accounts, created)


async def _create(sql: Sql, r: SignInRequest, holder: Row | None) -> tuple[Row, str]:
    """A new person. An unverified holder loses the address when the provider proves it."""
    i, now = r.identity, r.now
    email = i.email
    if holder is not None:  # held, but not verified (a verified holder was linked or refused)
        if i.authoritative and await sql.fetchrow(_RELEASE, holder["id"], now) is not None:
            await _event(sql, r, "email_released", "proven_by_provider", holder["id"])
        else:
            email = None  # an address nobody proved reserves nothing, but is not taken either
    proven = (now, i.provider) if email is not None and i.authoritative else (None, None)
    user = await sql.fetchone(_INSERT_USER, new_id(), i.name, email, *proven, i.picture, now)
    account_id = new_id()
    await sql.fetch(_INSERT_ACCOUNT, account_id, user["id"], i.provider, i.account_key, now)
    return user, account_id


async def _refresh(sql: Sql, r: SignInRequest, user: Row) -> Row:
    """Rule 1: name and picture from the token, the address when the provider proves it."""
    i, now = r.identity, r.now
    name = i.name if not user["name_edited"] and i.name else user["name"]
    image = i.picture if not user["image_edited"] and i.picture else user["image"]
    email, verified, pending = user["email"], user["email_verified"], user["pending_email"]
    verified_by = user["email_verified_by"]
    if i.authoritative and i.email is not None and i.email == email:
        verified = verified or now  # proven now, if it was not before, and by a provider
        verified_by = i.provider if verified_by in (None, VERIFIED_BY_MAIL) else verified_by
    elif i.authoritative and i.email is not None and not user["email_edited"]:
        other = await sql.fetchrow(_BY_EMAIL, i.email)
        if other is None or other["email_verified"] is None:
            if other is not None and other["id"] != user["id"]:
                if await sql.fetchrow(_RELEASE, other["id"], now) is None:
                    raise _Retry  # verified meanwhile
                await _event(sql, r, "email_released", "proven_by_provider", other["id"])
            if email is not None:  # the old address's mail tokens must not verify it any more
                await sql.fetch(_FORGET_MAIL_TOKENS, user["id"], email)
            email, verified, verified_by = i.email, now, i.provider
            pending = None if pending == i.email else pending
    before = (user[k] for k in ("name", "image", "email", "email_verified", "pending_email"))
    changed = (name, image, email, verified, pending) != tuple(before)
    updated = await sql.fetchrow(
        _UPDATE_USER,
        user["id"],
        name,
        image,
        email,
        as_utc(verified) if verified else None,
        verified_by,
        pending,
        now if changed else as_utc(user["updated_at"]),
        now,
    )
    if updated is None:
        raise _Retry  # disabled since we read it: decide again
    return updated


async def _link_refusal(sql: Sql, r: SignInRequest, holder: Row) -> str | None:
    """Rule 2: why this sign-in may not be linked to the user holding its address verified
    (the audit event's reason), or None."""
    i = r.identity
    if not i.authoritative:  # the address is someone's, and this provider cannot vouch
        return "account_conflict"
    if await sql.fetchrow(_HAS_PROVIDER, holder["id"], i.provider) is not None:
        # Another account key at this provider for the same address: a recycled domain or a
        # recreated account, never the same person by proof.
        return "same_provider"
    if holder["email_verified_by"] in (None, VERIFIED_BY_MAIL):
        # Proven only by our mail (or before this was recorded): a phished confirmation must
        # not earn the link.
        return "not_proven_by_provider"
    return None


async def _event(sql: Sql, r: SignInRequest, type_: str, reason: str, user_id: str | None) -> None:
    """`sign_in_refused` or `email_released`, about `user_id`, for this sign-in."""
    detail = {"provider": r.identity.provider, "reason": reason}
    await audit.record(sql, type_, at=r.now, context=r.context, user_id=user_id, **detail)
