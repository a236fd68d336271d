"""Signing keys in the database (IDENTITY_KEY_ENCRYPTION_KEY set): the `KeySource` of replicas
that share no volume (docs/operations.md, "Keys").

Each row holds the private key sealed with Fernet (authenticated encryption: a row altered in
the database, or a wrong key-encryption key, is refused, never half-read) and the public JWK in
the clear. Several key-encryption keys may be given, newest first: the first seals, any opens,
and `identity keys reseal` moves every row to the first.

Rotation is automatic: one replica at a time (a PostgreSQL advisory transaction lock; SQLite is
one process, its write lock enough) adds a key when the active one has served the rotation
interval minus the publish lead, so the new key is published for the whole lead before it
signs, and deletes keys whose every token has expired. Times are the database's clock.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import delete, insert, select, update

from identity.clock import Clock, utc
from identity.store.database import Database, Tx
from identity.store.models import SIGNING_KEYS

from .key_material import (
    MIN_BITS,
    KeyFileError,
    KeyRing,
    SigningKey,
    new_private_key,
    signing_key,
)

logger = logging.getLogger("identity.keys")
VARIABLE = "IDENTITY_KEY_ENCRYPTION_KEY"
# PostgreSQL advisory lock of the key rotation: identity's class ("id" in ASCII, as the
# janitor's in accounts/housekeeping.py, which is 1), then the job.
LOCK_CLASS = 0x6964
ROTATION_LOCK = 2
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock($1, $2) AS locked"
_LOCK = "SELECT pg_advisory_xact_lock($1, $2)"
_NOW = "SELECT extract(epoch FROM now())::float8 AS now"
_COLUMNS = (SIGNING_KEYS.c.kid, SIGNING_KEYS.c.created_at, SIGNING_KEYS.c.activates_at)


class KeySealer:
    """Seals and opens private keys under the key-encryption keys (Fernet, newest first)."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        if not keys:
            raise KeyFileError(f"{VARIABLE}: not set")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def seal(self, private: rsa.RSAPrivateKey) -> str:
        der = private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self._fernet.encrypt(der).decode()

    def open(self, kid: str, sealed: str, public_jwk: object, created: float) -> SigningKey:
        where = f"signing key {kid} (database)"
        try:
            der = self._fernet.decrypt(sealed.encode())
        except InvalidToken:
            # Fernet authenticates: a wrong key and an altered row look alike, and neither is read.
            raise KeyFileError(
                f"{where}: {VARIABLE} does not open it (a wrong key-encryption key, "
                "or the row was altered)"
            ) from None
        try:
            private = serialization.load_der_private_key(der, password=None)
        except (TypeError, ValueError):
            raise KeyFileError(f"{where}: not a readable private key") from None
        key = signing_key(private, created=created, where=where)
        # The kid and public key name the row; a row whose sealed key is another's is refused.
        if key.kid != kid or key.public_jwk != public_jwk:
            raise KeyFileError(f"{where}: the sealed key does not match its kid and public key")
        return key

    def reseal(self, sealed: str) -> str:
        """The same key, sealed under the first key-encryption key."""
        try:
            return self._fernet.rotate(sealed.encode()).decode()
        except InvalidToken:
            raise KeyFileError(f"{VARIABLE}: does not open a stored signing key") from None


@dataclass(frozen=True)
class Row:
    kid: str
    created: float
    activates: float


class DatabaseKeys:
    """The `KeySource` of the database store, and its writes (first key, rotation, import)."""

    def __init__(
        self,
        database: Database,
        encryption_keys: tuple[str, ...],
        *,
        lead: float,
        token_lifetime: float,
        clock: Clock = time.time,
    ) -> None:
        self._db = database
        self._sealer = KeySealer(encryption_keys)
        self._lead = lead
        self._lifetime = token_lifetime
        self._clock = clock
        self._rows: tuple[Row, ...] = ()
        self._opened: dict[str, SigningKey] = {}  # by kid: a key is opened once per process
        self._problems: list[KeyFileError] = []

    # -- KeySource ----------------------------------------------------------------------------

    def describe(self) -> str:
        return "the database (signing_keys)"

    def signature(self) -> Hashable:
        return self._rows

    def load_usable(self) -> tuple[list[SigningKey], list[KeyFileError]]:
        keys = [
            _with_activation(self._opened[r.kid], r.activates, created=r.created)
            for r in self._rows
            if r.kid in self._opened
        ]
        return keys, list(self._problems)

    async def fetch(self) -> None:
        """The rows' times (one small statement), then the sealed keys of rows not yet opened."""
        async with self._db.transaction() as tx:
            rows = await _rows(tx)
            wanted = [r.kid for r in rows if r.kid not in self._opened]
            sealed = []
            if wanted:
                sealed = list(
                    (
                        await tx.execute(
                            select(
                                SIGNING_KEYS.c.kid,
                                SIGNING_KEYS.c.sealed_key,
                                SIGNING_KEYS.c.public_jwk,
                            ).where(SIGNING_KEYS.c.kid.in_(wanted))
                        )
                    ).all()
                )
        problems = []
        times = {r.kid: r for r in rows}
        for kid, token, public_jwk in sealed:
            row = times[kid]
            try:
                key = self._sealer.open(kid, token, public_jwk, row.created)
            except KeyFileError as problem:
                problems.append(problem)
                continue
            self._opened[kid] = _with_activation(key, row.activates)
        live = {r.kid for r in rows}
        self._opened = {kid: key for kid, key in self._opened.items() if kid in live}
        self._rows = tuple(rows)
        self._problems = problems

    # -- writes -------------------------------------------------------------------------------

    async def ensure_first(self, *, bits: int = MIN_BITS) -> SigningKey | None:
        """A first key unless the table has one (then None); two processes starting at once
        make one between them (they wait for each other's lock)."""
        async with self._db.transaction() as tx:
            await self._lock(tx, wait=True)
            if await _rows(tx):
                return None
            return await self._insert(tx, bits=bits, activates_in=0.0)

    async def rotate(self, *, bits: int = MIN_BITS) -> SigningKey:
        """A new key now (`identity keys rotate`): published at once, signing after the lead
        (at once when it is the first); its `activates` says when."""
        async with self._db.transaction() as tx:
            await self._lock(tx, wait=True)
            first = not await _rows(tx)
            return await self._insert(tx, bits=bits, activates_in=0.0 if first else self._lead)

    async def rotate_if_due(self, interval: float, *, bits: int = MIN_BITS) -> SigningKey | None:
        """One round of automatic rotation, done by one replica at a time: a key when the newest
        has signed for `interval` minus the lead (none while one is queued), then the rows of
        expired keys deleted. The key made, or None."""
        async with self._db.transaction() as tx:
            if not await self._lock(tx, wait=False):
                return None  # another replica is at it; it will be seen at the next fetch
            rows = await _rows(tx)
            now = await self._now(tx)
            made = None
            if not rows:
                made = await self._insert(tx, bits=bits, activates_in=0.0)
            elif now >= rows[-1].activates + interval - self._lead and rows[-1].activates <= now:
                made = await self._insert(tx, bits=bits, activates_in=self._lead)
            expired = await self._delete_expired(tx, rows, now)
        if made is not None:
            logger.info(
                "signing key rotated",
                extra={"event": {"kid": made.kid, "activates": made.activates}},
            )
        if expired:
            logger.info("expired signing keys deleted", extra={"event": {"kids": expired}})
        return made

    async def prune(self) -> list[str]:
        """Delete the rows of expired keys now (`identity keys prune`); their kids."""
        async with self._db.transaction() as tx:
            await self._lock(tx, wait=True)
            return await self._delete_expired(tx, await _rows(tx), await self._now(tx))

    async def import_keys(self, keys: Sequence[SigningKey]) -> list[SigningKey]:
        """Keys of a key directory, with the schedule they had there; those already stored are
        left alone. The keys added."""
        ring = KeyRing(keys, lead=self._lead, token_lifetime=self._lifetime)
        added = []
        async with self._db.transaction() as tx:
            await self._lock(tx, wait=True)
            stored = {r.kid for r in await _rows(tx)}
            for state in ring.schedule(self._clock()):
                if state.key.kid in stored or state.state == "expired":
                    continue
                await self._store(
                    tx, state.key, created=state.key.created, activates=state.activates
                )
                added.append(state.key)
        return added

    async def reseal(self) -> int:
        """Every row sealed again under the first key-encryption key; how many."""
        async with self._db.transaction() as tx:
            await self._lock(tx, wait=True)
            rows = (await tx.execute(select(SIGNING_KEYS.c.kid, SIGNING_KEYS.c.sealed_key))).all()
            for kid, token in rows:
                try:
                    resealed = self._sealer.reseal(token)
                except KeyFileError:
                    raise KeyFileError(
                        f"signing key {kid} (database): {VARIABLE} does not open it; "
                        "keep the old key-encryption key after the new one until reseal is done"
                    ) from None
                await tx.execute(
                    update(SIGNING_KEYS)
                    .where(SIGNING_KEYS.c.kid == kid)
                    .values(sealed_key=resealed)
                )
        return len(rows)

    # -- inside ------------------------------------------------------------------------------

    async def _lock(self, tx: Tx, *, wait: bool) -> bool:
        if not self._db.postgres:
            return True  # SQLite: the transaction holds the write lock (BEGIN IMMEDIATE)
        if wait:
            await tx.fetch(_LOCK, LOCK_CLASS, ROTATION_LOCK)
            return True
        return bool((await tx.fetchone(_TRY_LOCK, LOCK_CLASS, ROTATION_LOCK))["locked"])

    async def _delete_expired(self, tx: Tx, rows: list[Row], now: float) -> list[str]:
        # Expired: superseded, and every token it signed has expired since (key_material.py).
        expired = [
            row.kid
            for row, successor in itertools.pairwise(rows)
            if successor.activates + self._lifetime <= now
        ]
        if expired:
            await tx.execute(delete(SIGNING_KEYS).where(SIGNING_KEYS.c.kid.in_(expired)))
        return expired

    async def _now(self, tx: Tx) -> float:
        # Replicas agree on a rotation's time by asking the database (docs/sessions.md).
        if self._db.postgres:
            return float((await tx.fetchone(_NOW))["now"])
        return self._clock()

    async def _insert(self, tx: Tx, *, bits: int, activates_in: float) -> SigningKey:
        now = await self._now(tx)
        key = signing_key(new_private_key(bits), created=now, where="new key")
        return await self._store(tx, key, created=now, activates=now + activates_in)

    async def _store(
        self, tx: Tx, key: SigningKey, *, created: float, activates: float
    ) -> SigningKey:
        await tx.execute(
            insert(SIGNING_KEYS).values(
                kid=key.kid,
                created_at=utc(created),
                activates_at=utc(activates),
                sealed_key=self._sealer.seal(key.private),
                public_jwk=key.public_jwk,
            )
        )
        return _with_activation(key, activates, created=created)


async def _rows(tx: Tx) -> list[Row]:
    result = await tx.execute(select(*_COLUMNS).order_by(SIGNING_KEYS.c.created_at))
    return [
        Row(kid, created.timestamp(), activates.timestamp()) for kid, created, activates in result
    ]


def _with_activation(
    key: SigningKey, activates: float, *, created: float | None = None
) -> SigningKey:
    return SigningKey(
        kid=key.kid,
        created=key.created if created is None else created,
        private=key.private,
        public_jwk=key.public_jwk,
        activates=activates,
    )
