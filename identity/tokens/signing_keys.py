"""Our signing keys: PEM files in the key directory, loaded once as key objects.

A key's state is derived from its creation time (in its file name), the publish lead and the
longest lifetime of a token it signs; nothing else is stored (docs/operations.md, "Keys"):

    next      published, not signing: created + lead is still ahead
    active    signing: the newest key whose lead has passed (the very first key needs no lead)
    retiring  published, not signing: superseded, until every token it signed has expired
    expired   not published; `identity keys prune` removes it

A file that vanishes, dangles or cannot be read is skipped and logged by name, never fatal to a
running server: the key reload and the janitor keep going.

Longer than most modules: three small classes of one subject (the files, their schedule, the
live reload), read together.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

from identity.clock import Clock

logger = logging.getLogger("identity.keys")
MIN_BITS = 2048
# fullmatch only: `$` would also accept a name ending in a newline.
_NAME = re.compile(r"rsa-(\d{8}T\d{6}Z)(?:-\d+)?\.pem")
_STAMP = "%Y%m%dT%H%M%SZ"
Signature = tuple[tuple[str, float, int], ...]


class KeyFileError(Exception):
    """A key file or the key directory is unusable; the message names the file."""


@dataclass(frozen=True)
class SigningKey:
    kid: str  # RFC 7638 thumbprint
    created: float
    path: Path
    private: rsa.RSAPrivateKey  # parsed once: a PEM parse costs milliseconds
    public_jwk: dict[str, str]

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.private.public_key()


@dataclass(frozen=True)
class KeyView:
    """What is true of the keys from now until `valid_until`: computed once, not per request."""

    active: SigningKey
    published: dict[str, rsa.RSAPublicKey]
    jwks: bytes
    etag: str
    valid_until: float


@dataclass(frozen=True)
class KeyState:
    key: SigningKey
    state: str
    activates: float
    retires: float | None


class KeyRing:
    """The keys of one directory with their schedule; immutable, rebuilt on reload."""

    def __init__(self, keys: list[SigningKey], *, lead: float, token_lifetime: float) -> None:
        self.keys = sorted(keys, key=lambda k: (k.created, k.kid))
        self._lead = lead
        self._lifetime = token_lifetime

    def schedule(self, now: float) -> list[KeyState]:
        # Activation times rise with creation order, so key i is superseded by key i + 1.
        activations = self._activations()
        active = self._active_index(activations, now)
        states: list[KeyState] = []
        for i, key in enumerate(self.keys):
            retires = activations[i + 1] + self._lifetime if i + 1 < len(self.keys) else None
            if i == active:
                state = "active"
            elif i > active:
                state = "next"
            elif retires is not None and now < retires:
                state = "retiring"
            else:
                state = "expired"
            states.append(KeyState(key, state, activations[i], retires))
        return states

    def view(self, now: float) -> KeyView:
        if not self.keys:
            raise KeyFileError("no signing key")
        schedule = self.schedule(now)
        live = [s.key for s in schedule if s.state != "expired"]
        jwks = orjson.dumps({"keys": [k.public_jwk for k in live]})
        boundaries = [t for s in schedule for t in (s.activates, s.retires) if t and t > now]
        return KeyView(
            active=next(s.key for s in schedule if s.state == "active"),
            published={k.kid: k.public for k in live},
            jwks=jwks,
            etag='"' + hashlib.sha256(jwks).hexdigest()[:32] + '"',
            valid_until=min(boundaries, default=float("inf")),
        )

    def _activations(self) -> list[float]:
        # The very first key signs at once: no cache anywhere can hold an older set.
        return [k.created if i == 0 else k.created + self._lead for i, k in enumerate(self.keys)]

    @staticmethod
    def _active_index(activations: list[float], now: float) -> int:
        ready = [i for i, a in enumerate(activations) if a <= now]
        # Before any key is ready (a clock set back), the oldest key keeps signing.
        return ready[-1] if ready else 0


class KeyStore:
    """Reads and writes the key directory."""

    def __init__(self, directory: Path, *, passphrase: str | None = None) -> None:
        self.directory = directory
        self._passphrase = passphrase.encode() if passphrase else None

    def _files(self) -> list[tuple[Path, str]]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.iterdir()):
            match = _NAME.fullmatch(path.name)
            if match is not None:
                found.append((path, match.group(1)))
        return found

    def signature(self) -> Signature:
        """Names, mtimes and sizes of the key files: cheap to compare, changes on any edit."""
        entries = []
        for path, _ in self._files():
            try:
                info = path.stat()
            except OSError:  # vanished since the listing, or a dangling link
                entries.append((path.name, -1.0, -1))
                continue
            entries.append((path.name, info.st_mtime, info.st_size))
        return tuple(entries)

    def load(self) -> list[SigningKey]:
        """Every key file of the directory; KeyFileError naming the first unusable one."""
        keys, problems = self.load_usable()
        if problems:
            raise problems[0]
        return keys

    def load_usable(self) -> tuple[list[SigningKey], list[KeyFileError]]:
        """The usable keys, and what is wrong with each unusable file."""
        keys, problems = [], []
        for path, stamp in self._files():
            try:
                keys.append(self._load_file(path, stamp))
            except KeyFileError as problem:
                problems.append(problem)
            except OSError as error:  # vanished, dangling or unreadable
                problems.append(KeyFileError(f"{path}: {type(error).__name__}"))
        return keys, problems

    def generate_first(self, *, bits: int = MIN_BITS) -> SigningKey | None:
        """A first key, unless the directory has one (then None). Under a lock file in the
        directory: two processes started at once make one key between them, not one each."""
        if self.load():
            return None  # without the lock: a read-only directory that has its keys is fine
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if self.load():
                return None
            return self.generate(bits=bits)

    def generate(self, *, bits: int = MIN_BITS, now: float | None = None) -> SigningKey:
        if bits < MIN_BITS:
            raise KeyFileError(f"RSA keys must have at least {MIN_BITS} bits")
        # File names have whole seconds; round up, so the stamp is never earlier than the real
        # creation and the publish lead is never shortened.
        created = math.ceil(time.time() if now is None else now)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(self._passphrase)
            if self._passphrase
            else serialization.NoEncryption()
        )
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        stamp = datetime.fromtimestamp(created, UTC).strftime(_STAMP)
        path = self.directory / f"rsa-{stamp}.pem"
        counter = 1
        while path.exists():
            path = self.directory / f"rsa-{stamp}-{counter}.pem"
            counter += 1
        # Write to a private temporary file, then rename: a reader never sees half a key.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._load_file(path, stamp)

    def _load_file(self, path: Path, stamp: str) -> SigningKey:
        info = path.stat()  # through the link: a Secret volume's files are links into `..data`
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        # A private key readable by other users is a leaked key: refuse it loudly. One owned by
        # root may be read by its group (as PostgreSQL allows its key files): a Kubernetes
        # Secret mounted with fsGroup is root's, mode 0440, the group the pod's own.
        allowed = 0o040 if info.st_uid == 0 else 0
        if mode & 0o077 & ~allowed:
            raise KeyFileError(f"{path}: mode {mode:o} is too open; run chmod 600 {path}")
        private = self._parse(path, path.read_bytes())
        if not isinstance(private, rsa.RSAPrivateKey):
            raise KeyFileError(f"{path}: not an RSA key")
        if private.key_size < MIN_BITS:
            raise KeyFileError(f"{path}: RSA key of {private.key_size} bits (minimum {MIN_BITS})")
        jwk = RSAKey.import_key(private)
        created = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC).timestamp()
        public = {"kty": "RSA", "n": str(jwk["n"]), "e": str(jwk["e"])}
        kid = jwk.thumbprint()
        return SigningKey(
            kid=kid,
            created=created,
            path=path,
            private=private,
            public_jwk={**public, "kid": kid, "alg": "RS256", "use": "sig"},
        )

    def _parse(self, path: Path, pem: bytes) -> object:
        try:
            return serialization.load_pem_private_key(pem, password=self._passphrase)
        except TypeError:
            if self._passphrase is None:
                raise KeyFileError(
                    f"{path}: encrypted, and IDENTITY_KEYS_PASSPHRASE is not set"
                ) from None
        except ValueError:
            raise KeyFileError(
                f"{path}: not a readable PEM private key (corrupt, truncated, or wrong passphrase)"
            ) from None
        # A passphrase is set but this file is not encrypted: a key from before the passphrase.
        # It still loads, so setting a passphrase never takes a running service down.
        logger.warning(
            "key file is not encrypted although IDENTITY_KEYS_PASSPHRASE is set; "
            "rotate to replace it with an encrypted key",
            extra={"event": {"path": str(path)}},
        )
        try:
            return serialization.load_pem_private_key(pem, password=None)
        except (TypeError, ValueError):
            raise KeyFileError(f"{path}: not a readable PEM private key") from None


class KeyManager:
    """The keys a running server uses: loaded once, reloaded when the directory changes.

    A reload keeps every usable key and skips each unusable file (logged by name); when no
    usable key is left it keeps the keys already loaded, so a broken rotation never takes a
    running server down.
    """

    def __init__(
        self, store: KeyStore, *, lead: float, token_lifetime: float, clock: Clock = time.time
    ) -> None:
        self.store = store
        self._lead = lead
        self._lifetime = token_lifetime
        self._clock = clock
        self._ring = KeyRing([], lead=lead, token_lifetime=token_lifetime)
        self._view: KeyView | None = None
        self._signature: Signature = ()

    @property
    def ring(self) -> KeyRing:
        return self._ring

    def load(self) -> None:
        """Initial load of a process: the usable keys; unusable files are logged by name."""
        signature = self.store.signature()
        keys = self._usable()
        if not keys:
            raise KeyFileError(
                f"{self.store.directory}: no signing key (run: identity keys generate)"
            )
        self._install(keys, signature)

    def reload_if_changed(self) -> bool:
        if self.store.signature() == self._signature:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Re-read the directory (SIGHUP does this). Never raises: a bad state is logged."""
        try:
            signature = self.store.signature()
            keys = self._usable()
        except OSError as error:  # the directory itself is gone or unreadable
            logger.error(
                "key directory unreadable; keeping the loaded keys: %s", type(error).__name__
            )
            return False
        if not keys:
            logger.error("no usable key file left; keeping the loaded keys")
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

    def _usable(self) -> list[SigningKey]:
        keys, problems = self.store.load_usable()
        for problem in problems:
            logger.error("unusable key file skipped: %s", problem)
        return keys

    def _install(self, keys: list[SigningKey], signature: Signature) -> None:
        self._ring = KeyRing(keys, lead=self._lead, token_lifetime=self._lifetime)
        self._view = None
        self._signature = signature
