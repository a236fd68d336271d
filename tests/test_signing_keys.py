"""Our signing keys on disk and their schedule (docs/operations.md, "Keys")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from identity.tokens.signing_keys import KeyFileError, KeyManager, KeyRing, KeyStore

LEAD, LIFETIME = 1200.0, 960.0
T0 = 1_800_000_000.0


def test_generated_key_is_private_rsa_2048(tmp_path: Path) -> None:
    key = KeyStore(tmp_path / "keys").generate(now=T0)
    assert os.stat(key.path).st_mode & 0o777 == 0o600
    assert key.private.key_size == 2048
    assert key.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert KeyStore(tmp_path / "keys").load()[0].kid == key.kid
    assert set(key.public_jwk) == {"kty", "n", "e", "kid", "alg", "use"}


def test_passphrase_encrypts_the_file(tmp_path: Path) -> None:
    key = KeyStore(tmp_path, passphrase="correct horse").generate(now=T0)
    assert key.path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert KeyStore(tmp_path, passphrase="correct horse").load()[0].kid == key.kid
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        KeyStore(tmp_path, passphrase="wrong").load()
    with pytest.raises(KeyFileError, match="IDENTITY_KEYS_PASSPHRASE"):
        KeyStore(tmp_path).load()


def test_a_passphrase_still_loads_existing_plaintext_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plain = KeyStore(tmp_path).generate(now=T0)
    store = KeyStore(tmp_path, passphrase="correct horse")
    assert [k.kid for k in store.load()] == [plain.kid]
    assert "not encrypted" in caplog.text
    rotated = store.generate(now=T0 + 10)  # new ones are written encrypted
    assert rotated.path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert {k.kid for k in store.load()} == {plain.kid, rotated.kid}


def test_only_exact_key_file_names_are_read(tmp_path: Path) -> None:
    """`re.match(...$)` also took a name ending in a newline: a stray file became a key."""
    store = KeyStore(tmp_path)
    key = store.generate(now=T0)
    stray = tmp_path / (key.path.name + "\n")
    stray.write_bytes(KeyStore(tmp_path / "other").generate(now=T0).path.read_bytes())
    stray.chmod(0o600)
    assert [k.kid for k in store.load()] == [key.kid]


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
    return KeyRing(
        [store.generate(now=T0 + o) for o in offsets], lead=LEAD, token_lifetime=LIFETIME
    )


def states(ring: KeyRing, now: float) -> list[str]:
    return [s.state for s in ring.schedule(now)]


def test_first_key_signs_at_once(tmp_path: Path) -> None:
    assert states(_ring(tmp_path, 0), T0) == ["active"]


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
    view = _ring(tmp_path, 0, 100).view(T0 + 100)
    assert view.valid_until == T0 + 100 + LEAD
    assert view.jwks.startswith(b'{"keys":[')
    assert view.etag.startswith('"')


def _manager(tmp_path: Path, now: float = T0 + 10) -> KeyManager:
    manager = KeyManager(KeyStore(tmp_path), lead=LEAD, token_lifetime=LIFETIME, clock=lambda: now)
    manager.load()
    return manager


def test_reload_skips_a_bad_file_and_keeps_the_good_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = KeyStore(tmp_path)
    first = store.generate(now=T0)
    manager = _manager(tmp_path)
    bad = tmp_path / "rsa-20300101T000000Z.pem"
    bad.write_bytes(b"garbage")
    bad.chmod(0o600)
    second = store.generate(now=T0 + 5)
    assert manager.reload_if_changed() is True
    assert set(manager.view().published) == {first.kid, second.kid}
    assert bad.name in caplog.text


@pytest.mark.parametrize("trouble", ["vanished", "dangling_link", "unreadable_dir_entry"])
def test_a_file_that_vanishes_or_dangles_never_stops_the_reload(
    tmp_path: Path, trouble: str
) -> None:
    """A Kubernetes Secret update, `keys prune` on a shared volume, a dangling symlink."""
    store = KeyStore(tmp_path)
    first = store.generate(now=T0)
    manager = _manager(tmp_path)
    if trouble == "vanished":
        doomed = store.generate(now=T0 + 3)
        doomed.path.unlink()  # listed earlier by some, gone now
    elif trouble == "dangling_link":
        (tmp_path / "rsa-20300102T000000Z.pem").symlink_to(tmp_path / "nowhere.pem")
    else:
        (tmp_path / "rsa-20300103T000000Z.pem").mkdir()
    assert manager.store.signature()  # never raises
    manager.reload()  # never raises
    new = store.generate(now=T0 + 7)
    manager.reload_if_changed()
    assert {first.kid, new.kid} <= set(manager.view().published)


def test_with_no_usable_file_left_the_loaded_keys_stay(tmp_path: Path) -> None:
    first = KeyStore(tmp_path).generate(now=T0)
    manager = _manager(tmp_path)
    first.path.write_bytes(b"broken")
    assert manager.reload() is False
    assert manager.view().active.kid == first.kid


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
    manager = _manager(tmp_path, T0)
    assert list(manager.view().published) == [good.kid]
    assert bad.name in caplog.text
    # The strict check (what `identity serve` runs before starting) still refuses.
    with pytest.raises(KeyFileError, match=bad.name):
        KeyStore(tmp_path).load()
