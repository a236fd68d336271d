"""Settings.from_env: defaults, validation naming the variable, production's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from identity.settings import ConfigError, Settings

from .fakes import MS_TENANT

PRODUCTION = {
    "IDENTITY_ENV": "production",
    "IDENTITY_ISSUER": "https://id.example.com",
    "IDENTITY_GOOGLE_CLIENT_IDS": "web.apps.googleusercontent.com",
    "IDENTITY_CLIENTS": "nextjs:0123456789abcdef0123",
    "IDENTITY_DATABASE_URL": "postgresql+asyncpg://identity@db/identity",
    "IDENTITY_SMTP_URL": "smtp://mail.example.com:587",
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
    assert (s.refresh_reuse_interval, s.audit_retention) == (10, 7_776_000)
    assert s.microsoft_authority == "https://login.microsoftonline.com"
    assert s.apple_issuers == ("https://appleid.apple.com",)
    assert s.migrate_on_start is True  # development with SQLite
    assert (s.host, s.port, s.log_format) == ("127.0.0.1", 8001, None)
    assert s.rate_limit_failures is not None and s.rate_limit_failures.count == 60


def test_lists_and_clients() -> None:
    s = Settings.from_env(
        {
            "IDENTITY_GOOGLE_CLIENT_IDS": " web , ios,android ",
            "IDENTITY_AUDIENCE": "https://api.example.com,https://other.example.com",
            "IDENTITY_CLIENTS": "a:0123456789abcdef,b:fedcba9876543210",
            "IDENTITY_ADMIN_CLIENTS": "b",
            "IDENTITY_ISSUER": "https://id.example.com/",
            "IDENTITY_MICROSOFT_CLIENT_IDS": "app",
            "IDENTITY_MICROSOFT_TENANTS": MS_TENANT.upper(),
        }
    )
    assert s.google_client_ids == ("web", "ios", "android")
    assert s.access_audience == ("https://api.example.com", "https://other.example.com")
    assert dict(s.clients) == {"a": "0123456789abcdef", "b": "fedcba9876543210"}
    assert s.admin_clients == ("b",)
    assert s.issuer == "https://id.example.com"
    assert s.microsoft_tenants == (MS_TENANT,)


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
        ("IDENTITY_ADMIN_CLIENTS", "nobody"),
        ("IDENTITY_GOOGLE_JWKS_URL", "file:///etc/passwd"),
        ("IDENTITY_KEY_PUBLISH_LEAD", "600"),
        ("IDENTITY_REFRESH_IDLE_TTL", "99999999"),
        ("IDENTITY_REFRESH_REUSE_INTERVAL", "61"),
        ("IDENTITY_AUDIT_RETENTION", "10"),
        ("IDENTITY_MICROSOFT_TENANTS", "not-a-guid"),
        ("IDENTITY_MICROSOFT_TENANTS", f"common,{MS_TENANT}"),
        ("IDENTITY_MICROSOFT_AUTHORITY", "login.microsoftonline.com"),
        ("IDENTITY_APPLE_ISSUERS", "appleid"),
        ("IDENTITY_SMTP_URL", "mail.example.com"),
        ("IDENTITY_RATE_LIMIT_FAILURES", "lots"),
        ("IDENTITY_TOKEN_ENCRYPTION_KEY", "not-a-fernet-key"),
        ("IDENTITY_PROVIDERS_FILE", "/nonexistent/providers.toml"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value).startswith(name + ":")
    assert "\n" not in str(caught.value)


def test_microsoft_client_ids_need_tenants() -> None:
    with pytest.raises(ConfigError, match=r"^IDENTITY_MICROSOFT_TENANTS: required"):
        Settings.from_env({"IDENTITY_MICROSOFT_CLIENT_IDS": "app"})


def test_production_accepts_a_complete_configuration() -> None:
    s = Settings.from_env(PRODUCTION)
    assert s.production
    assert s.migrate_on_start is False
    assert Settings.from_env({**PRODUCTION, "IDENTITY_SMTP_URL": "off"}).mail_enabled is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IDENTITY_ISSUER", "http://id.example.com"),
        ("IDENTITY_GOOGLE_CLIENT_IDS", ""),
        ("IDENTITY_CLIENTS", ""),
        ("IDENTITY_SMTP_URL", ""),  # the development mailer would write mail tokens to the log
        ("IDENTITY_GOOGLE_JWKS_URL", "http://keys.example.com/certs"),  # anyone on the path forges
        ("IDENTITY_LOG_FORMAT", "text"),
    ],
)
def test_production_refuses_unsafe_settings(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**PRODUCTION, name: value})
    assert str(caught.value).startswith(name + ":")


def test_production_holds_every_provider_url_to_https(tmp_path: Path) -> None:
    microsoft = {
        **PRODUCTION,
        "IDENTITY_MICROSOFT_CLIENT_IDS": "app",
        "IDENTITY_MICROSOFT_TENANTS": "common",
    }
    assert Settings.from_env(microsoft).microsoft_client_ids == ("app",)
    with pytest.raises(ConfigError, match=r"^IDENTITY_MICROSOFT_AUTHORITY:"):
        Settings.from_env({**microsoft, "IDENTITY_MICROSOFT_AUTHORITY": "http://login.example"})
    apple = {**PRODUCTION, "IDENTITY_APPLE_CLIENT_IDS": "com.example.web"}
    with pytest.raises(ConfigError, match=r"^IDENTITY_APPLE_JWKS_URL:"):
        Settings.from_env({**apple, "IDENTITY_APPLE_JWKS_URL": "http://apple.example/keys"})
    file = tmp_path / "providers.toml"
    file.write_text('[providers.okta]\nissuer = "http://okta.example"\nclient_ids = ["x"]\n')
    with pytest.raises(ConfigError, match=r"providers.okta.issuer"):
        Settings.from_env({**PRODUCTION, "IDENTITY_PROVIDERS_FILE": str(file)})


def test_production_with_sqlite_does_not_migrate_by_itself() -> None:
    s = Settings.from_env({**PRODUCTION, "IDENTITY_DATABASE_URL": "sqlite+aiosqlite:///x.db"})
    assert s.migrate_on_start is False
    assert Settings.from_env({**PRODUCTION, "IDENTITY_MIGRATE_ON_START": "1"}).migrate_on_start


def test_every_variable_read_is_known_and_typos_are_reported() -> None:
    known = Settings.variables()
    assert "IDENTITY_GOOGLE_CLIENT_IDS" in known and "IDENTITY_ADMIN_CLIENTS" in known
    s = Settings.from_env({"IDENTITY_GOOGLE_CLIENT_ID": "web", "IDENTITY_SOMETHING_ELSE": "1"})
    assert dict(s.unknown_variables) == {
        "IDENTITY_GOOGLE_CLIENT_ID": "IDENTITY_GOOGLE_CLIENT_IDS",
        "IDENTITY_SOMETHING_ELSE": None,
    }
