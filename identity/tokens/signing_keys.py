"""The keys a running server signs with and publishes, from either store (docs/operations.md,
"Keys"): the key directory (key_directory.py) or the database (key_database.py), both read
through the `KeySource` seam of key_material.py.

The names other modules use are re-exported here, so that callers need not know which module
of the seam holds them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Sequence

from identity.clock import Clock
from identity.settings import Settings
from identity.store.database import Database

from .key_database import DatabaseKeys
from .key_directory import KeyStore
from .key_material import (
    MIN_BITS,
    FileKey,
    KeyFileError,
    KeyRing,
    KeySource,
    KeyState,
    KeyView,
    SigningKey,
)

__all__ = [
    "MIN_BITS",
    "DatabaseKeys",
    "FileKey",
    "KeyFileError",
    "KeyManager",
    "KeyRing",
    "KeySource",
    "KeyState",
    "KeyStore",
    "KeyView",
    "SigningKey",
]
logger = logging.getLogger("identity.keys")


class KeyManager:
    """The keys a running server uses: loaded once, reloaded when its source changes.

    A reload keeps every usable key and skips each unusable file or row (logged by name); when
    no usable key is left it keeps the keys already loaded, so a broken rotation never takes a
    running server down. A directory is read synchronously (`load`, `reload_if_changed`); a
    database source needs its rows fetched first: `start` and `refresh` do both.
    """

    def __init__(
        self, store: KeySource, *, lead: float, token_lifetime: float, clock: Clock = time.time
    ) -> None:
        self.store = store
        self._lead = lead
        self._lifetime = token_lifetime
        self._clock = clock
        self._ring = KeyRing([], lead=lead, token_lifetime=token_lifetime)
        self._view: KeyView | None = None
        self._signature: Hashable = ()

    @property
    def ring(self) -> KeyRing:
        return self._ring

    def load(self) -> None:
        """Initial load of a process: the usable keys; unusable files are logged by name."""
        signature = self.store.signature()
        keys, problems = self.store.load_usable()
        if not keys and problems:
            raise problems[0]  # names the file, or the variable whose key opens no row
        for problem in problems:
            logger.error("unusable key skipped: %s", problem)
        if not keys:
            raise KeyFileError(
                f"{self.store.describe()}: no signing key (run: identity keys generate)"
            )
        self._install(keys, signature)

    async def start(self) -> None:
        """`load`, after bringing a database's rows into reach."""
        await self.store.fetch()
        self.load()

    async def refresh(self, *, force: bool = False) -> bool:
        """What the background loop (and SIGHUP) runs: fetch, then reload if anything changed.
        Never raises: a database that is down keeps the loaded keys until the next round."""
        try:
            await self.store.fetch()
        except Exception as error:  # an outage, or a row that cannot be read: keep what we have
            logger.error(
                "signing keys not fetched", extra={"event": {"error": type(error).__name__}}
            )
            return False
        return self.reload() if force else self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        if self.store.signature() == self._signature:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Re-read the source (SIGHUP does this). Never raises: a bad state is logged."""
        try:
            signature = self.store.signature()
            keys = self._usable()
        except OSError as error:  # the directory itself is gone or unreadable
            logger.error(
                "key directory unreadable; keeping the loaded keys: %s", type(error).__name__
            )
            return False
        if not keys:
            logger.error("no usable key left; keeping the loaded keys")
            self._signature = signature  # do not retry the same broken state every round
            return False
        self._install(keys, signature)
        logger.info("signing keys reloaded", extra={"event": {"kids": [k.kid for k in keys]}})
        return True

    def view(self) -> KeyView:
        now = self._clock()
        view = self._view
        if view is None or now >= view.valid_until:
            view = self._view = self._ring.view(now)
        return view

    def _usable(self) -> Sequence[SigningKey]:
        keys, problems = self.store.load_usable()
        for problem in problems:
            logger.error("unusable key skipped: %s", problem)
        return keys

    def _install(self, keys: Sequence[SigningKey], signature: Hashable) -> None:
        self._ring = KeyRing(keys, lead=self._lead, token_lifetime=self._lifetime)
        self._view = None
        self._signature = signature


def key_source(settings: Settings, database: Database, *, clock: Clock = time.time) -> KeySource:
    """The store the settings choose: the database when IDENTITY_KEY_ENCRYPTION_KEY is set, the
    key directory otherwise (docs/operations.md, "Keys")."""
    if settings.keys_in_database:
        return DatabaseKeys(
            database,
            settings.key_encryption_keys,
            lead=settings.key_publish_lead,
            token_lifetime=token_lifetime(settings),
            clock=clock,
        )
    return KeyStore(settings.keys_dir, passphrase=settings.keys_passphrase)


def token_lifetime(settings: Settings) -> float:
    """The longest a token we signed stays valid somewhere: a retiring key is published so long."""
    return settings.access_token_ttl + settings.clock_skew
