"""Signing keys on disk and their schedule (SPEC §8)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from identity.keys import KeyFileError, KeyManager, KeyRing, KeyStore

LEAD, LIFETIME = 1200.0, 960.0
T0 = 1_800_000_000.0


def test_generated_key_is_private_rsa_2048(tmp_path: Path) -> None:
    key = KeyStore(tmp_path / "keys").generate(now=T0)
    assert os.stat(key.path).st_mode & 0o777 == 0o600
    assert key.key.private_key is not None
    assert key.key.private_key.key_size == 2048
    assert key.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert KeyStore(tmp_path / "keys").load()[0].kid == key.kid


def test_passphrase_encrypts_the_file(tmp_path: Path) -> None:
    key = KeyStore(tmp_path, passphrase="correct horse").generate(now=T0)
    assert key.path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert KeyStore(tmp_path, passphrase="correct horse").load()[0].kid == key.kid
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        KeyStore(tmp_path, passphrase="wrong").load()
    with pytest.raises(KeyFileError, match="IDENTITY_KEYS_PASSPHRASE"):
        KeyStore(tmp_path).load()


@pytest.mark.parametrize("problem", ["corrupt", "truncated", "not_rsa", "too_open", "small"])
def test_bad_key_files_are_named(tmp_path: Path, problem: str) -> None:
    store = KeyStore(tmp_path)
    path = store.generate(now=T0).path
    if problem == "corrupt":
        path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    elif problem == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif problem == "not_rsa":
        ec_key = ec.generate_private_key(ec.SECP256R1())
        path.write_bytes(
            ec_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    elif problem == "too_open":
        path.chmod(0o644)
    elif problem == "small":
        with pytest.raises(KeyFileError, match="at least 2048"):
            store.generate(bits=1024)
        return
    with pytest.raises(KeyFileError) as caught:
        store.load()
    assert str(path) in str(caught.value)


def _ring(tmp_path: Path, *offsets: float) -> KeyRing:
    store = KeyStore(tmp_path)
    keys = [store.generate(now=T0 + offset) for offset in offsets]
    return KeyRing(keys, lead=LEAD, token_lifetime=LIFETIME)


def states(ring: KeyRing, now: float) -> list[str]:
    return [s.state for s in ring.schedule(now)]


def test_first_key_signs_at_once(tmp_path: Path) -> None:
    ring = _ring(tmp_path, 0)
    assert states(ring, T0) == ["active"]


def test_rotation_timeline(tmp_path: Path) -> None:
    ring = _ring(tmp_path, 0, 86_400)
    rotated = T0 + 86_400
    old, new = ring.keys
    # Published at once, signing only after the lead.
    assert states(ring, rotated) == ["active", "next"]
    assert set(ring.view(rotated).published) == {old.kid, new.kid}
    assert ring.view(rotated).active.kid == old.kid
    assert states(ring, rotated + LEAD) == ["retiring", "active"]
    assert ring.view(rotated + LEAD).active.kid == new.kid
    # The old key stays published until every token it signed has expired.
    assert states(ring, rotated + LEAD + LIFETIME - 1) == ["retiring", "active"]
    assert states(ring, rotated + LEAD + LIFETIME) == ["expired", "active"]
    assert set(ring.view(rotated + LEAD + LIFETIME).published) == {new.kid}


def test_view_is_precomputed_until_next_boundary(tmp_path: Path) -> None:
    ring = _ring(tmp_path, 0, 100)
    view = ring.view(T0 + 100)
    assert view.valid_until == T0 + 100 + LEAD
    assert view.jwks.startswith(b'{"keys":[')
    assert view.etag.startswith('"')


def test_manager_keeps_keys_when_reload_finds_a_bad_file(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    first = store.generate(now=T0)
    manager = KeyManager(store, lead=LEAD, token_lifetime=LIFETIME, clock=lambda: T0 + 10)
    manager.load()
    (tmp_path / "rsa-20300101T000000Z.pem").write_bytes(b"garbage")
    (tmp_path / "rsa-20300101T000000Z.pem").chmod(0o600)
    assert manager.reload_if_changed() is False
    assert manager.view().active.kid == first.kid
    (tmp_path / "rsa-20300101T000000Z.pem").unlink()
    second = store.generate(now=T0 + 5)
    assert manager.reload_if_changed() is True
    assert set(manager.view().published) == {first.kid, second.kid}


def test_manager_refuses_an_empty_directory(tmp_path: Path) -> None:
    manager = KeyManager(KeyStore(tmp_path), lead=LEAD, token_lifetime=LIFETIME)
    with pytest.raises(KeyFileError, match="no signing key"):
        manager.load()


def test_a_worker_starting_next_to_a_bad_file_uses_the_good_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = KeyStore(tmp_path).generate(now=T0)
    bad = tmp_path / "rsa-20300101T000000Z.pem"
    bad.write_text("truncated")
    bad.chmod(0o600)
    manager = KeyManager(KeyStore(tmp_path), lead=LEAD, token_lifetime=LIFETIME, clock=lambda: T0)
    manager.load()
    assert list(manager.view().published) == [good.kid]
    assert bad.name in caplog.text
    # The strict check (what `identity serve` runs before starting) still refuses.
    with pytest.raises(KeyFileError, match=bad.name):
        KeyStore(tmp_path).load()
