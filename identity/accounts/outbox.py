"""The outbox: notices written in the transaction of the change they tell about
(docs/notifications.md).

`Notices` knows who subscribes to what: each webhook endpoint to its events, each client with a
back-channel logout URI to the ends of its sessions. A change calls `write` (or, for ended
sessions, `sessions.end_sessions`) on its own transaction, so a notice exists exactly when its
change does; nobody subscribed, no row. The delivery worker (`delivery.py`) sends them.

Payloads hold ids and changed field names, never a token, secret or address. One kind is
internal: `apple.revoke`, the revocation of a deleted or unlinked Apple account's refresh token
(`revoke_at_apple`), whose token travels sealed in the row's own `sealed` column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from identity.destinations import WebhookEndpoint
from identity.store.database import Sql
from identity.tokens.apple_revocation import AppleClients, StoredAppleToken

BACKCHANNEL = "backchannel:"
APPLE = "apple:"  # apple:<client id>: a refresh token to revoke at Apple
APPLE_REVOKE = "apple.revoke"  # internal: no webhook can subscribe to it (destinations.EVENTS)
# Due at once: by the database's clock on PostgreSQL, which the delivery worker reads.
_INSERT = """
INSERT INTO outbox (event, destination, payload, audit_event_id, created_at, next_attempt_at,
                    attempts, state, sealed)
VALUES ($1, $2, $3, $4, $5, {due}, 0, 'pending', $6)
"""
_DUE = {"postgresql": "now()", "sqlite": "$5"}
_REVOKED = """
INSERT INTO revocations (txid, session_id, client_id, user_id, ended_at, expires_at)
VALUES ({txid}, $1, $2, $3, $4, $5)
"""
# The writing transaction's id orders the feed on PostgreSQL (docs/notifications.md); SQLite
# has one writer at a time, so its ids alone commit in order.
_TXID = {"postgresql": "pg_current_xact_id()::text::bigint", "sqlite": "0"}


@dataclass(frozen=True)
class Notices:
    """Who is told what; `token_ttl` bounds how long an ended session's access tokens live;
    `apple` is set when stored Apple refresh tokens are revoked at Apple."""

    webhooks: tuple[WebhookEndpoint, ...] = ()
    backchannel: Mapping[str, str] = field(default_factory=dict)
    token_ttl: int = 960  # IDENTITY_ACCESS_TOKEN_TTL + IDENTITY_CLOCK_SKEW
    apple: AppleClients | None = field(default=None, compare=False)

    def subscribers(self, event: str) -> tuple[str, ...]:
        return tuple(w.destination for w in self.webhooks if event in w.events)

    def session_ended(self, client_id: str) -> tuple[str, ...]:
        """Destinations of the end of one session of this client."""
        own = (BACKCHANNEL + client_id,) if client_id in self.backchannel else ()
        return own + self.subscribers("session.ended")

    def sign_in(self) -> list[str] | None:
        """What a sign-in may tell, as identity_sign_in takes it ('<event> <destination>'
        each); None when nobody listens, so a sign-in writes no row."""
        pairs = [
            f"{event} {destination}"
            for event in ("user.created", "account.linked")
            for destination in self.subscribers(event)
        ]
        return pairs or None

    def revocation_expiry(self, at: datetime) -> datetime:
        return at + timedelta(seconds=self.token_ttl)


NOBODY = Notices()


async def write(
    sql: Sql,
    destinations: Iterable[str],
    event: str,
    payload: dict[str, Any],
    *,
    at: datetime,
    audit_event_id: int | None,
    sealed: str | None = None,
) -> None:
    body = orjson.dumps(payload).decode()
    # A transaction knows its dialect; only PostgreSQL's functions write without one.
    query = _INSERT.format(due=_DUE[getattr(sql, "dialect", "postgresql")])
    for destination in destinations:
        await sql.fetch(query, event, destination, body, audit_event_id, at, sealed)


async def tell(
    sql: Sql,
    notices: Notices,
    event: str,
    payload: dict[str, Any],
    *,
    at: datetime,
    audit_event_id: int | None,
) -> None:
    """One event to each of its subscribers."""
    await write(
        sql, notices.subscribers(event), event, payload, at=at, audit_event_id=audit_event_id
    )


async def revoke_at_apple(
    sql: Sql,
    notices: Notices,
    stored: Sequence[StoredAppleToken],
    *,
    user_id: str,
    at: datetime,
    audit_event_id: int | None,
) -> None:
    """One `apple.revoke` notice per stored Apple refresh token, in the transaction that deletes
    its account; nothing when Apple revocation is not configured."""
    if notices.apple is None:
        return
    for item in stored:
        destination = APPLE + notices.apple.client_of(item)
        # Kept sealed as in `accounts` (the same Fernet ciphertext under
        # IDENTITY_TOKEN_ENCRYPTION_KEY): a database reader never sees the token, and only the
        # sender opens it, at send time.
        await write(
            sql,
            (destination,),
            APPLE_REVOKE,
            {"user_id": user_id},
            at=at,
            audit_event_id=audit_event_id,
            sealed=item.refresh_token,
        )


async def revoked(
    sql: Sql,
    dialect: str,
    *,
    session_id: str,
    client_id: str,
    user_id: str,
    at: datetime,
    expires_at: datetime,
) -> None:
    """The revocation feed's row of one ended session."""
    query = _REVOKED.format(txid=_TXID[dialect])
    await sql.fetch(query, session_id, client_id, user_id, at, expires_at)


async def signed_in(
    sql: Sql,
    pairs: list[str],
    ids: tuple[str, str, str],
    created: bool,
    linked: bool,
    at: datetime,
    audit_event_id: int,
) -> None:
    """The sign-in's notices, as identity_sign_in writes them: user.created for a new user,
    account.linked for an account joined to a user by address. `ids`: user, account,
    provider."""
    user_id, account_id, provider = ids
    for pair in pairs:
        event, _, destination = pair.partition(" ")
        if event == "user.created" and created:
            payload = {"user_id": user_id, "provider": provider}
        elif event == "account.linked" and linked:
            payload = {"user_id": user_id, "account_id": account_id, "provider": provider}
        else:
            continue
        await write(sql, (destination,), event, payload, at=at, audit_event_id=audit_event_id)
