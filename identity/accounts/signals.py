"""What a provider's security event does here: the policy table and its actions (docs/signals.md).

`POLICY` is the one place that says what each event does; docs/signals.md has the same table.
`Signals.receive` applies a verified signal (tokens/signal_tokens.py) in one transaction: the
`jti` is recorded first (INSERT … ON CONFLICT DO NOTHING decides which of two concurrent
deliveries acts, on any replica), then each event's action, each with its `signal_received`
audit event. A `jti` already recorded is acknowledged and changes nothing; an event about an
account we do not know is acknowledged and audited, nothing else.

What a signal leaves for later (docs/signals.md, "Guarantees"): an action that ends sessions
because the provider revoked them records when on the account (`sessions_revoked_at`), and the
sign-in refuses every id_token issued no later; a back-channel logout by `sid` remembers that
upstream session while its id_tokens could be accepted. Suspend and enable events apply in
the order of their `iat`, not of their arrival: an older one arriving late is audited "stale".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from identity import addresses
from identity.clock import Clock, utc
from identity.store.database import Database, Tx
from identity.store.models import ACCOUNTS, SESSIONS, USERS
from identity.tokens.id_tokens import REPLAY_MARGIN
from identity.tokens.signal_tokens import Signal

from . import audit, cutoffs
from .outbox import NOBODY, Notices
from .sessions import end_sessions
from .users import delete_user, unlink_account

RISC = "https://schemas.openid.net/secevent/risc/event-type/"
OAUTH = "https://schemas.openid.net/secevent/oauth/event-type/"
HIJACKING = "hijacking"
BULK_ACCOUNT = "bulk-account"

# (provider kind, event) -> action. Google's events by the last segment of their URI
# (RISC and OAuth event types); account-disabled by its reason; Apple's by `type`; a logout
# token by whether it names an upstream session (`sid`) or only the account (`sub`).
POLICY: dict[tuple[str, str], str] = {
    ("google", "sessions-revoked"): "end_user_sessions",
    ("google", "tokens-revoked"): "end_user_sessions_and_forget_tokens",
    ("google", "account-disabled/hijacking"): "end_user_sessions",
    ("google", "account-disabled"): "suspend_account",  # no reason, or one not listed here
    ("google", "account-disabled/bulk-account"): "audit_only",
    ("google", "account-credential-change-required"): "audit_only",
    ("google", "account-enabled"): "lift_suspension",
    ("google", "account-purged"): "unlink_account",
    ("google", "verification"): "audit_only",
    ("apple", "account-delete"): "unlink_account",
    ("apple", "consent-revoked"): "end_account_sessions_and_forget_tokens",
    ("apple", "email-disabled"): "stop_mail",
    ("apple", "email-enabled"): "resume_mail",
    ("logout", "backchannel-logout/sid"): "end_upstream_sessions",
    ("logout", "backchannel-logout/sub"): "end_account_sessions",
}
UNKNOWN_EVENT = "other"  # an event type not in the table: audited only
AUDIT_ONLY = "audit_only"
# Applied in the order of their events' `iat`: an older one arriving late changes nothing.
ORDERED = frozenset({"suspend_account", "lift_suspension"})
# Provider tokens stored on an account (all encrypted); "forget" sets them all to NULL.
_TOKENS = {
    "access_token": None,
    "refresh_token": None,
    "id_token": None,
    "expires_at": None,
    "token_type": None,
    "scope": None,
    "session_state": None,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one event of a signal did: for the metric and the endpoint's log line."""

    event: str  # the table's event name, or "other"
    action: str
    outcome: str  # acted | audited | unknown_account | duplicate | stale


@dataclass(frozen=True, slots=True)
class _Event:
    name: str
    subject: str | None  # the account key at the provider
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Account:
    id: str
    user_id: str


class Signals:
    def __init__(
        self,
        database: Database,
        *,
        clock: Clock = time.time,
        notices: Notices = NOBODY,
        id_token_max_age: int = 3600,
        leeway: int = 60,
    ) -> None:
        self._db = database
        self._clock = clock
        self._notices = notices
        # How long an ended upstream session is remembered: as long as an id_token issued in
        # it could still be accepted (IDENTITY_ID_TOKEN_MAX_AGE, the skew and the replay margin).
        self._remember_sid = id_token_max_age + leeway + REPLAY_MARGIN
        self._actions: dict[str, Callable[[Tx, Signal, _Event, _Account], Awaitable[int]]] = {
            "end_user_sessions": self._end_user_sessions,
            "end_user_sessions_and_forget_tokens": self._end_user_sessions_and_forget_tokens,
            "suspend_account": self._suspend,
            "lift_suspension": self._lift_suspension,
            "unlink_account": self._unlink,
            "end_account_sessions_and_forget_tokens": self._end_account_and_forget_tokens,
            "stop_mail": self._stop_mail,
            "resume_mail": self._resume_mail,
            "end_upstream_sessions": self._end_upstream_sessions,
            "end_account_sessions": self._end_account_sessions,
        }
        missing = set(POLICY.values()) - set(self._actions) - {AUDIT_ONLY}
        if missing:  # a programming error: every action of the table is implemented
            raise ValueError(f"policy actions without code: {sorted(missing)}")

    async def receive(self, signal: Signal, *, context: audit.Context) -> list[Outcome]:
        """Apply `signal` once, in one transaction; what each of its events did."""
        events = _events_of(signal)
        async with self._db.transaction() as tx:
            now = utc(self._clock())
            if await tx.fetchrow(_REMEMBER, signal.provider, signal.jti, signal.keep_until) is None:
                # Delivered before (or by a twin that committed first): acknowledged, no effect.
                return [Outcome(e.name, action_of(signal, e), "duplicate") for e in events]
            outcomes = [await self._apply(tx, signal, e, now, context) for e in events]
        return outcomes

    async def _apply(
        self,
        tx: Tx,
        signal: Signal,
        event: _Event,
        now: datetime,
        context: audit.Context,
    ) -> Outcome:
        action = action_of(signal, event)
        account = await _account(tx, signal.provider, event.subject)
        if action == AUDIT_ONLY:
            outcome, count = "audited", 0
        elif account is None and not (action == "end_upstream_sessions" and event.subject is None):
            outcome, count = "unknown_account", 0
        elif action in ORDERED and not await cutoffs.newest(
            tx, (account or _NOBODY).id, utc(signal.issued_at)
        ):
            outcome, count = "stale", 0  # a later suspend or enable was applied already
        else:
            count = await self._actions[action](tx, signal, event, account or _NOBODY)
            outcome = "acted"
        await audit.record(
            tx,
            "signal_received",
            at=now,
            context=context,
            user_id=account.user_id if account is not None else None,
            provider=signal.provider,
            event=event.name,
            action=action if outcome == "acted" else outcome,
            jti=signal.jti,
            count=count,
        )
        return Outcome(event.name, action, outcome)

    # -- the actions: each returns how many sessions (or rows) it ended or changed ------------

    async def _end(self, tx: Tx, e: _Event, **which: Any) -> int:
        # As every session ends (docs/architecture.md): the rows go, and each ended session
        # gets its revocation-feed row and `session.ended` notices. The `signal_received`
        # event this transaction writes is its audit record.
        ended = await end_sessions(
            tx,
            self._notices,
            dialect=tx.dialect,
            reason=f"signal:{e.name}",
            at=utc(self._clock()),
            context=audit.Context(),
            **which,
        )
        return len(ended)

    async def _revoke(self, tx: Tx, s: Signal, a: _Account, **values: Any) -> None:
        # The account's id_tokens issued until now are refused from here on: ending the
        # sessions alone lets a stolen, unused one start a new session a second later. The later
        # of the event's `iat` (the provider's clock) and its arrival (ours): whichever clock is
        # ahead, no id_token issued before the event passes; one issued in the same second is
        # refused too (the user signs in again).
        at = max(utc(self._clock()), utc(s.issued_at))
        await cutoffs.revoke_sessions(tx, a.id, at, **values)

    async def _end_user_sessions(self, tx: Tx, s: Signal, e: _Event, a: _Account) -> int:
        await self._revoke(tx, s, a)
        return await self._end(tx, e, user_id=a.user_id)

    async def _end_user_sessions_and_forget_tokens(
        self, tx: Tx, s: Signal, e: _Event, a: _Account
    ) -> int:
        await self._revoke(tx, s, a, **_TOKENS)
        return await self._end(tx, e, user_id=a.user_id)

    async def _end_account_sessions(self, tx: Tx, s: Signal, e: _Event, a: _Account) -> int:
        await self._revoke(tx, s, a)
        return await self._end(tx, e, account_id=a.id)

    async def _end_account_and_forget_tokens(
        self, tx: Tx, s: Signal, e: _Event, a: _Account
    ) -> int:
        await self._revoke(tx, s, a, **_TOKENS)
        return await self._end(tx, e, account_id=a.id)

    async def _suspend(self, tx: Tx, s: Signal, e: _Event, a: _Account) -> int:
        now = utc(self._clock())
        await tx.execute(
            update(ACCOUNTS)
            .where(ACCOUNTS.c.id == a.id, ACCOUNTS.c.suspended_at.is_(None))
            .values(suspended_at=now, updated_at=now)
        )
        await cutoffs.applied(tx, a.id, utc(s.issued_at))
        # Only what this account started: the user's other accounts keep working.
        return await self._end(tx, e, account_id=a.id)

    async def _lift_suspension(self, tx: Tx, s: Signal, e: _Event, a: _Account) -> int:
        result = await tx.execute(
            update(ACCOUNTS)
            .where(ACCOUNTS.c.id == a.id, ACCOUNTS.c.suspended_at.is_not(None))
            .values(suspended_at=None, updated_at=utc(self._clock()))
        )
        await cutoffs.applied(tx, a.id, utc(s.issued_at))
        return int(result.rowcount)

    async def _unlink(self, tx: Tx, s: Signal, e: _Event, a: _Account) -> int:
        # The user's row, locked: a concurrent unlink or delete sees what this one leaves.
        await tx.execute(select(USERS.c.id).where(USERS.c.id == a.user_id).with_for_update())
        now = utc(self._clock())
        # As the user's own unlink and DELETE /users/me do it (users.py): the same audit events,
        # `account.unlinked` / `user.deleted` notices and Apple token revocations.
        reason, by = f"signal:{e.name}", {"by": "signal"}
        ended = await unlink_account(
            tx,
            self._notices,
            user_id=a.user_id,
            account_id=a.id,
            provider=s.provider,
            at=now,
            context=audit.Context(),
            end=True,
            reason=reason,
            detail=by,
        )
        left = (
            await tx.execute(select(ACCOUNTS.c.id).where(ACCOUNTS.c.user_id == a.user_id).limit(1))
        ).first()
        if left is not None:
            return len(ended)
        # Nobody could sign in as this user again: deleted as by DELETE /users/me.
        gone = await delete_user(
            tx, self._notices, a.user_id, at=now, context=audit.Context(), reason=reason, detail=by
        )
        return len(ended) + len(gone)

    async def _stop_mail(self, tx: Tx, s: Signal, e: _Event, a: _Account) -> int:
        address = addresses.normalize(e.body.get("email"))
        if address is None:
            return 0
        row = await tx.fetchrow(_UNDELIVERABLE, address, s.provider, utc(self._clock()))
        return 1 if row is not None else 0

    async def _resume_mail(self, tx: Tx, s: Signal, e: _Event, a: _Account) -> int:
        address = addresses.normalize(e.body.get("email"))
        if address is None:
            return 0
        return len(await tx.fetch(_DELIVERABLE, address))

    async def _end_upstream_sessions(self, tx: Tx, s: Signal, e: _Event, a: _Account) -> int:
        # The upstream session is over: an id_token issued in it is refused from now on, for as
        # long as one could be accepted (the janitor prunes the record after).
        if s.sid is not None:  # always, for this action ("backchannel-logout/sid")
            keep_until = utc(self._clock() + self._remember_sid)
            await cutoffs.end_upstream(tx, s.provider, s.sid, keep_until)
        # Exactly the sessions exchanged from that upstream session of this provider (and of
        # this account, when the token names one): another provider's equal sid is not it.
        accounts = select(ACCOUNTS.c.id).where(ACCOUNTS.c.provider == s.provider)
        if e.subject is not None:
            accounts = accounts.where(ACCOUNTS.c.id == a.id)
        found = await tx.execute(
            select(SESSIONS.c.id).where(
                SESSIONS.c.upstream_sid == s.sid, SESSIONS.c.account_id.in_(accounts)
            )
        )
        ids = [row.id for row in found]
        if not ids:
            return 0
        return await self._end(tx, e, session_ids=tuple(ids))


_NOBODY = _Account(id="", user_id="")
_REMEMBER = """
INSERT INTO received_signals (provider, jti, expires_at) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING jti
"""
_UNDELIVERABLE = """
INSERT INTO undeliverable_addresses (address, provider, since) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING address
"""
_DELIVERABLE = "DELETE FROM undeliverable_addresses WHERE address = $1 RETURNING address"


def action_of(signal: Signal, event: _Event) -> str:
    """The table's action for this event; events not in it are audited only."""
    return POLICY.get((_kind(signal), event.name), AUDIT_ONLY)


def _kind(signal: Signal) -> str:
    """The table's first column: Google's SETs, Apple's notifications, logout tokens."""
    return {"set": "google", "apple": "apple", "logout": "logout"}[signal.kind]


def _events_of(signal: Signal) -> list[_Event]:
    kind = _kind(signal)
    if kind == "logout":
        name = "backchannel-logout/" + ("sid" if signal.sid is not None else "sub")
        return [_Event(name, signal.subject, {})]
    if kind == "apple":
        ((name, body),) = signal.events.items()
        known = name if (kind, name) in POLICY else UNKNOWN_EVENT
        return [_Event(known, signal.subject, body)]
    return [_google_event(uri, body) for uri, body in signal.events.items()]


def _google_event(uri: str, body: dict[str, Any]) -> _Event:
    name = uri.removeprefix(RISC).removeprefix(OAUTH) if uri.startswith((RISC, OAUTH)) else ""
    if name == "account-disabled":
        reason = body.get("reason")
        if reason in (HIJACKING, BULK_ACCOUNT):
            name = f"account-disabled/{reason}"
    if ("google", name) not in POLICY:
        name = UNKNOWN_EVENT
    subject = body.get("subject")
    sub = subject.get("sub") if isinstance(subject, dict) else None
    valid = isinstance(sub, str) and 0 < len(sub) <= 255 and sub.isprintable()
    return _Event(name, sub if valid else None, body)


async def _account(tx: Tx, provider: str, subject: str | None) -> _Account | None:
    if subject is None:
        return None
    row = (
        await tx.execute(
            select(ACCOUNTS.c.id, ACCOUNTS.c.user_id)
            .where(ACCOUNTS.c.provider == provider, ACCOUNTS.c.provider_account_id == subject)
            .with_for_update()
        )
    ).first()
    return _Account(row.id, row.user_id) if row is not None else None
