"""The development `.env` file: read in development only; the environment wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from identity import environment
from identity.settings import ConfigError, Settings


def test_dotenv_is_read_in_development(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# comments and export are fine\n"
        "export IDENTITY_GOOGLE_CLIENT_IDS=from-file\n"
        "IDENTITY_PORT='9001'\n"
    )
    merged = environment.load({"IDENTITY_PORT": "9100"}, tmp_path)
    s = Settings.from_env(merged)
    assert s.google_client_ids == ("from-file",)
    assert s.port == 9100  # the real environment wins over the file


def test_dotenv_is_never_read_in_production(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("IDENTITY_GOOGLE_CLIENT_IDS=from-file\n")
    merged = environment.load({"IDENTITY_ENV": "production"}, tmp_path)
    assert "IDENTITY_GOOGLE_CLIENT_IDS" not in merged


def test_dotenv_cannot_switch_production_on(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("IDENTITY_ENV=production\n")
    with pytest.raises(ConfigError, match="must come from the environment"):
        environment.load({}, tmp_path)


def test_without_a_file_nothing_changes(tmp_path: Path) -> None:
    assert environment.load({"A": "1"}, tmp_path) == {"A": "1"}


def test_a_bad_value_from_the_file_says_so(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("IDENTITY_PORT=99999\nIDENTITY_KEY_PUBLISH_LEAD=10\n")
    merged = environment.load({"IDENTITY_ACCESS_TOKEN_TTL": "soon"}, tmp_path)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(merged)
    assert sorted(caught.value.problems) == [
        "IDENTITY_ACCESS_TOKEN_TTL: must be a whole number (got 'soon')",  # the environment's
        "IDENTITY_KEY_PUBLISH_LEAD (from .env): must be at least 2 x IDENTITY_JWKS_MAX_AGE (1200s)",
        "IDENTITY_PORT (from .env): must be between 1 and 65535 (got 99999)",
    ]
