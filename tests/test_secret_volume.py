"""The key directory as the kubelet lays out a Secret volume, and its updates.

The kubelet writes every version of a Secret into a hidden directory of its own
(`..2026_12_04_18_00_00.123`), points `..data` at the current one, and makes each key a symlink
`name -> ..data/name`. An update writes a new hidden directory, swaps `..data` to it with one
rename, adds the links of new keys, removes those of keys gone, then the old directory. With
`fsGroup` the files are root's, mode 0440 (defaultMode 0400 plus the group's read), group the
pod's: the only way uid 10001 can read a Secret it does not own.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from identity.tokens.signing_keys import FileKey, KeyManager, KeyStore

from .kube import kubelet_write

T0 = 1_800_000_000.0


def _keys(source: Path, *times: float) -> dict[str, bytes]:
    store = KeyStore(source)
    return {k.path.name: k.path.read_bytes() for k in (store.generate(now=t) for t in times)}


def _manager(volume: Path) -> KeyManager:
    # At T0 + 700 a key made at T0 + 600 signs and one made at T0 is still published.
    manager = KeyManager(KeyStore(volume), lead=60, token_lifetime=60, clock=lambda: T0 + 700)
    manager.load()
    return manager


def test_a_secret_update_adds_and_removes_keys_at_the_next_reload(tmp_path: Path) -> None:
    volume, source = tmp_path / "keys", tmp_path / "source"
    first = _keys(source, T0)
    kubelet_write(volume, first)
    manager = _manager(volume)
    [first_kid] = manager.view().published
    # The operator rotates: the Secret gains a key.
    second = _keys(source / "2", T0 + 600)
    kubelet_write(volume, {**first, **second})
    assert manager.reload_if_changed() is True
    assert len(manager.view().published) == 2
    assert manager.view().active.kid != first_kid  # the newer key signs (its lead is over)
    # And later drops the old one.
    kubelet_write(volume, second)
    assert manager.reload_if_changed() is True
    assert first_kid not in manager.view().published
    assert manager.reload_if_changed() is False  # nothing new: nothing read


def test_a_key_rewritten_under_the_same_name_is_noticed(tmp_path: Path) -> None:
    # The links do not change at all: only what `..data` points at.
    volume, source = tmp_path / "keys", tmp_path / "source"
    name = "rsa-20270115T080000Z.pem"
    original = _keys(source, T0)
    kubelet_write(volume, {name: next(iter(original.values()))})
    manager = _manager(volume)
    before = manager.view().active.kid
    replacement = _keys(source / "2", T0)
    kubelet_write(volume, {name: next(iter(replacement.values()))})
    assert manager.reload_if_changed() is True
    assert manager.view().active.kid != before


def test_a_reload_between_the_swap_and_the_new_links_loses_nothing(tmp_path: Path) -> None:
    volume, source = tmp_path / "keys", tmp_path / "source"
    first, second = _keys(source, T0), _keys(source / "2", T0 + 600)
    kubelet_write(volume, first)
    manager = _manager(volume)
    # The swap done, the new key's link not made yet, the old key already gone from `..data`.
    version = volume / "..half"
    version.mkdir()
    for name, content in second.items():
        (version / name).write_bytes(content)
        (version / name).chmod(0o400)
    (volume / "..data_tmp").symlink_to(version.name)
    os.rename(volume / "..data_tmp", volume / "..data")
    manager.reload_if_changed()  # the old link dangles, the new one is missing: keeps what it had
    assert len(manager.view().published) == 1
    for name in second:
        (volume / name).symlink_to(f"..data/{name}")
    for name in first:
        (volume / name).unlink()
    assert manager.reload_if_changed() is True
    assert set(manager.view().published) != set()
    active = manager.view().active
    assert isinstance(active, FileKey) and active.path.name in second


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to root needs root")
def test_a_secret_mounted_with_fs_group_is_readable_but_a_world_readable_one_is_not(
    tmp_path: Path,
) -> None:
    volume, source = tmp_path / "keys", tmp_path / "source"
    kubelet_write(volume, _keys(source, T0), mode=0o440)  # what fsGroup makes of 0400
    for entry in (volume / "..data").iterdir():
        os.chown(entry, 0, 10001)
    assert len(KeyStore(volume).load()) == 1
    loose = tmp_path / "loose"
    kubelet_write(loose, _keys(source / "2", T0), mode=0o444)
    assert KeyStore(loose).load_usable()[0] == []
    mine = tmp_path / "mine"
    kubelet_write(mine, _keys(source / "3", T0), mode=0o440)
    for entry in (mine / "..data").iterdir():
        os.chown(entry, 10001, 10001)  # not root's: group read is one reader too many
    assert KeyStore(mine).load_usable()[0] == []
