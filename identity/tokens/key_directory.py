"""The key directory (IDENTITY_KEYS_DIR): PEM files, one per key, loaded once as key objects.

A key's creation time is in its file name; nothing else is stored (docs/operations.md, "Keys").
A file that vanishes, dangles or cannot be read is skipped and logged by name, never fatal to a
running server: the key reload and the janitor keep going.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import re
import stat
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from .key_material import MIN_BITS, FileKey, KeyFileError, new_private_key, signing_key

logger = logging.getLogger("identity.keys")
# fullmatch only: `$` would also accept a name ending in a newline.
_NAME = re.compile(r"rsa-(\d{8}T\d{6}Z)(?:-\d+)?\.pem")
_STAMP = "%Y%m%dT%H%M%SZ"
Signature = tuple[tuple[str, float, int], ...]


class KeyStore:
    """Reads and writes the key directory: a `KeySource` (key_material.py)."""

    def __init__(self, directory: Path, *, passphrase: str | None = None) -> None:
        self.directory = directory
        self._passphrase = passphrase.encode() if passphrase else None

    def describe(self) -> str:
        return str(self.directory)

    async def fetch(self) -> None:
        """Nothing to bring: the directory is read where it lies."""

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

    def load(self) -> list[FileKey]:
        """Every key file of the directory; KeyFileError naming the first unusable one."""
        keys, problems = self.load_usable()
        if problems:
            raise problems[0]
        return keys

    def load_usable(self) -> tuple[list[FileKey], list[KeyFileError]]:
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

    def generate_first(self, *, bits: int = MIN_BITS) -> FileKey | None:
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

    def generate(self, *, bits: int = MIN_BITS, now: float | None = None) -> FileKey:
        private = new_private_key(bits)  # refuses fewer than MIN_BITS
        # File names have whole seconds; round up, so the stamp is never earlier than the real
        # creation and the publish lead is never shortened.
        created = math.ceil(time.time() if now is None else now)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
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

    def _load_file(self, path: Path, stamp: str) -> FileKey:
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
        created = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC).timestamp()
        key = signing_key(private, created=created, where=str(path))
        return FileKey(key.kid, key.created, key.private, key.public_jwk, path=path)

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
