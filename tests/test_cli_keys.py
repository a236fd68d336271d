"""`identity keys …` on the database key store, run as processes (docs/operations.md, "Keys"):
generate, rotate, list, prune, import from a key directory, reseal after adding a new
key-encryption key; a wrong key-encryption key is one line naming the variable."""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet

from identity.cli.command import FAILED, OK

from .servers import base_env, run_cli

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def env_for(database_url: str, kek: str | None = OLD) -> dict[str, str]:
    extra = {"IDENTITY_KEY_ENCRYPTION_KEY": kek} if kek else {}
    return base_env(IDENTITY_DATABASE_URL=database_url, **extra)


def kids(listing: str) -> dict[str, str]:
    """kid → state, from `identity keys list`."""
    return {line.split()[0]: line.split()[1] for line in listing.splitlines()[1:]}


def test_generate_rotate_list_prune_in_the_database(database_url: str, tmp_path: Path) -> None:
    env = env_for(database_url)
    made = run_cli("keys", "generate", env=env, cwd=tmp_path)
    assert made.returncode == OK, made.stderr
    assert "generated a signing key in the database" in made.stdout
    again = run_cli("keys", "generate", env=env, cwd=tmp_path)
    assert "already has a signing key" in again.stdout
    rotated = run_cli("keys", "rotate", env=env, cwd=tmp_path)
    assert rotated.returncode == OK, rotated.stderr
    assert "added a key to the database" in rotated.stdout and "signs from" in rotated.stdout
    young = run_cli("keys", "rotate", "--if-older-than", "1d", env=env, cwd=tmp_path)
    assert "younger than 1d" in young.stdout
    listing = run_cli("keys", "list", env=env, cwd=tmp_path)
    assert sorted(kids(listing.stdout).values()) == ["active", "next"]
    pruned = run_cli("keys", "prune", env=env, cwd=tmp_path)
    assert pruned.returncode == OK and "0 expired key(s) removed" in pruned.stdout
    assert not (tmp_path / "keys").exists()  # no directory anywhere


def test_import_a_directory_then_reseal_under_a_new_kek(database_url: str, tmp_path: Path) -> None:
    assert (
        run_cli("keys", "generate", env=env_for(database_url, None), cwd=tmp_path).returncode == 0
    )
    on_disk = kids(run_cli("keys", "list", env=env_for(database_url, None), cwd=tmp_path).stdout)
    imported = run_cli("keys", "import", env=env_for(database_url), cwd=tmp_path)
    assert imported.returncode == OK, imported.stderr
    assert "1 key(s) imported, 0 already there" in imported.stdout
    again = run_cli(
        "keys", "import", str(tmp_path / "keys"), env=env_for(database_url), cwd=tmp_path
    )
    assert "0 key(s) imported, 1 already there" in again.stdout
    listed = run_cli("keys", "list", env=env_for(database_url), cwd=tmp_path)
    assert kids(listed.stdout) == on_disk  # the same key, with the same state
    # A new KEK first, the old one after it: every key still opens; reseal moves them.
    resealed = run_cli("keys", "reseal", env=env_for(database_url, f"{NEW},{OLD}"), cwd=tmp_path)
    assert resealed.returncode == OK, resealed.stderr
    assert "1 key(s) sealed under the first IDENTITY_KEY_ENCRYPTION_KEY" in resealed.stdout
    assert kids(run_cli("keys", "list", env=env_for(database_url, NEW), cwd=tmp_path).stdout)
    old = run_cli("keys", "list", env=env_for(database_url, OLD), cwd=tmp_path)
    assert old.returncode == FAILED
    assert "IDENTITY_KEY_ENCRYPTION_KEY does not open it" in old.stderr
    assert "Traceback" not in old.stderr and OLD not in old.stderr


def test_a_wrong_kek_stops_serve_and_check_in_one_line(database_url: str, tmp_path: Path) -> None:
    assert run_cli("keys", "generate", env=env_for(database_url), cwd=tmp_path).returncode == 0
    wrong = env_for(database_url, NEW)
    served = run_cli("serve", env=wrong, cwd=tmp_path)
    assert served.returncode == FAILED
    assert "IDENTITY_KEY_ENCRYPTION_KEY does not open it" in served.stderr
    assert "Traceback" not in served.stderr
    checked = run_cli("check", env=wrong, cwd=tmp_path)
    assert checked.returncode == FAILED
    assert "IDENTITY_KEY_ENCRYPTION_KEY does not open it" in checked.stderr


def test_import_and_reseal_need_the_database_store(tmp_path: Path) -> None:
    for command in ("import", "reseal"):
        result = run_cli("keys", command, env=base_env(), cwd=tmp_path)
        assert result.returncode == FAILED
        assert "set IDENTITY_KEY_ENCRYPTION_KEY" in result.stderr
