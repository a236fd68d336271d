"""Settings.from_env: defaults, validation naming the variable, production's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from identity.settings import ConfigError, Settings

PRODUCTION = {
    "IDENTITY_ENV": "production",
    "IDENTITY_ISSUER": "https://id.example.com",
    "IDENTITY_GOOGLE_CLIENT_IDS": "web.apps.googleusercontent.com",
    "IDENTITY_CLIENTS": "nextjs:0123456789abcdef0123",
    "IDENTITY_DATABASE_URL": "postgresql+asyncpg://identity@db/identity",
}


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.env == "development"
    assert s.issuer == "http://127.0.0.1:8001"
    assert s.database_url == "sqlite+aiosqlite:///./identity.db"
    assert s.keys_dir == Path("keys")
    assert s.access_audience == ("http://127.0.0.1:8001",)
    assert s.google_issuers == ("https://accounts.google.com", "accounts.google.com")
    assert (s.access_token_ttl, s.refresh_token_ttl, s.refresh_idle_ttl) == (
        900,
        2_592_000,
        1_209_600,
    )
    assert (s.clock_skew, s.id_token_max_age, s.key_publish_lead, s.jwks_max_age) == (
        60,
        3600,
        1200,
        600,
    )
    assert s.migrate_on_start is True  # development with SQLite
    assert (s.host, s.port, s.log_format) == ("127.0.0.1", 8001, "json")


def test_lists_and_clients() -> None:
    s = Settings.from_env(
        {
            "IDENTITY_GOOGLE_CLIENT_IDS": " web , ios,android ",
            "IDENTITY_AUDIENCE": "https://api.example.com,https://other.example.com",
            "IDENTITY_CLIENTS": "a:0123456789abcdef,b:fedcba9876543210",
            "IDENTITY_ISSUER": "https://id.example.com/",
        }
    )
    assert s.google_client_ids == ("web", "ios", "android")
    assert s.access_audience == ("https://api.example.com", "https://other.example.com")
    assert dict(s.clients) == {"a": "0123456789abcdef", "b": "fedcba9876543210"}
    assert s.issuer == "https://id.example.com"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IDENTITY_ENV", "staging"),
        ("IDENTITY_ISSUER", "ftp://id.example.com"),
        ("IDENTITY_ISSUER", "https://id.example.com/?x=1"),
        ("IDENTITY_DATABASE_URL", "mysql://x"),
        ("IDENTITY_DATABASE_URL", "not a url"),
        ("IDENTITY_ACCESS_TOKEN_TTL", "ten"),
        ("IDENTITY_ACCESS_TOKEN_TTL", "-5"),
        ("IDENTITY_ACCESS_TOKEN_TTL", "0"),
        ("IDENTITY_CLOCK_SKEW", "301"),
        ("IDENTITY_PORT", "70000"),
        ("IDENTITY_LOG_FORMAT", "xml"),
        ("IDENTITY_MIGRATE_ON_START", "maybe"),
        ("IDENTITY_CLIENTS", "nosecret"),
        ("IDENTITY_CLIENTS", "a:short"),
        ("IDENTITY_CLIENTS", "a:0123456789abcdef,a:0123456789abcdef"),
        ("IDENTITY_GOOGLE_JWKS_URL", "file:///etc/passwd"),
        ("IDENTITY_KEY_PUBLISH_LEAD", "600"),
        ("IDENTITY_REFRESH_IDLE_TTL", "99999999"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value).startswith(name + ":")
    assert "\n" not in str(caught.value)


def test_production_accepts_a_complete_configuration() -> None:
    s = Settings.from_env(PRODUCTION)
    assert s.production
    assert s.migrate_on_start is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IDENTITY_ISSUER", "http://id.example.com"),
        ("IDENTITY_GOOGLE_CLIENT_IDS", ""),
        ("IDENTITY_CLIENTS", ""),
    ],
)
def test_production_refuses_conveniences(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**PRODUCTION, name: value})
    assert str(caught.value).startswith(name + ":")


def test_production_with_sqlite_does_not_migrate_by_itself() -> None:
    s = Settings.from_env({**PRODUCTION, "IDENTITY_DATABASE_URL": "sqlite+aiosqlite:///x.db"})
    assert s.migrate_on_start is False
    assert Settings.from_env({**PRODUCTION, "IDENTITY_MIGRATE_ON_START": "1"}).migrate_on_start
