"""Settings.from_env: defaults, validation naming the variable, production's refusals."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest

from identity import credentials
from identity.settings import ConfigError, RateLimit, Settings

from .fakes import MS_TENANT

ROOT = Path(__file__).resolve().parent.parent

STRONG = "3f9a1c7e52b84d06a9e1f2c3b4d5e6f708192a3b4c5d6e7f"  # as `openssl rand -hex 24` prints
PRODUCTION = {
    "IDENTITY_ENV": "production",
    "IDENTITY_ISSUER": "https://id.example.com",
    "IDENTITY_GOOGLE_CLIENT_IDS": "web.apps.googleusercontent.com",
    "IDENTITY_CLIENTS": f"nextjs:{STRONG}",
    "IDENTITY_DATABASE_URL": "postgresql+asyncpg://identity@db/identity",
    "IDENTITY_SMTP_URL": "smtp://mail.example.com:587?starttls=required",
}


def problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    return list(caught.value.problems)


def test_defaults() -> None:
    s = Settings.from_env({})
    # One default per setting: built in code or read from an empty environment, the same.
    assert s == Settings()
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
    assert Settings().rate_limit_subject == s.rate_limit_subject == RateLimit(30, 60)


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
        ("IDENTITY_SMTP_URL", "smtp://mail.example.com?tls=yes"),  # unknown: not a silent no-op
        ("IDENTITY_SMTP_URL", "smtp://mail.example.com?starttls=maybe"),
        ("IDENTITY_SMTP_URL", "smtps://mail.example.com?starttls=required"),
        ("IDENTITY_DATABASE_URL", "postgresql+psycopg2://db/identity"),
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


def test_a_bad_value_says_how_to_spell_it() -> None:
    (problem,) = problems({"IDENTITY_DATABASE_URL": "mysql://db/identity"})
    assert "postgresql+asyncpg://" in problem and "sqlite+aiosqlite://" in problem
    (problem,) = problems({"IDENTITY_SMTP_URL": "smtp://user:hunter2@mail.example.com:x"})
    assert "hunter2" not in problem  # the URL may carry a password: never echoed


@pytest.mark.parametrize(
    ("given", "read"),
    [
        # What Heroku-style platforms hand out: the one driver we run each database with.
        ("postgres://u:p%40ss@db:5432/identity", "postgresql+asyncpg://u:p%40ss@db:5432/identity"),
        ("postgresql://u@db/identity", "postgresql+asyncpg://u@db/identity"),
        ("postgresql+asyncpg://u@db/identity", "postgresql+asyncpg://u@db/identity"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
        ("sqlite+aiosqlite:////var/x.db", "sqlite+aiosqlite:////var/x.db"),
    ],
)
def test_database_url_spellings_are_normalised(given: str, read: str) -> None:
    assert Settings.from_env({"IDENTITY_DATABASE_URL": given}).database_url == read


def test_the_development_issuer_follows_host_and_port() -> None:
    assert Settings.from_env({"IDENTITY_PORT": "8012"}).issuer == "http://127.0.0.1:8012"
    assert Settings(port=8012).issuer == "http://127.0.0.1:8012"  # the same rule in code
    assert Settings.from_env({"IDENTITY_HOST": "localhost"}).issuer == "http://localhost:8001"
    # A wildcard listen address is not one to be reached at.
    wildcard = "0.0.0.0"  # noqa: S104 - a value read, not an address bound
    assert Settings.from_env({"IDENTITY_HOST": wildcard}).issuer == "http://127.0.0.1:8001"
    assert Settings.from_env({"IDENTITY_HOST": "::1"}).issuer == "http://[::1]:8001"
    explicit = {"IDENTITY_PORT": "8012", "IDENTITY_ISSUER": "http://id.test:9"}
    assert Settings.from_env(explicit).issuer == "http://id.test:9"
    assert Settings.from_env({"IDENTITY_PORT": "8012"}).verification_link_base == (
        "http://127.0.0.1:8012/auth/verify-email"
    )


def test_production_accepts_a_complete_configuration() -> None:
    s = Settings.from_env(PRODUCTION)
    assert s.production
    assert s.migrate_on_start is False
    assert Settings.from_env({**PRODUCTION, "IDENTITY_SMTP_URL": "off"}).mail_enabled is False
    tls = {**PRODUCTION, "IDENTITY_SMTP_URL": "smtps://u:p@mail.example.com"}
    assert Settings.from_env(tls).smtp_url == "smtps://u:p@mail.example.com"


def test_an_empty_production_environment_is_refused_with_every_problem_at_once() -> None:
    found = problems({"IDENTITY_ENV": "production"})
    assert [p.split(":")[0] for p in found] == [
        "IDENTITY_ISSUER",
        "IDENTITY_GOOGLE_CLIENT_IDS",
        "IDENTITY_CLIENTS",
        "IDENTITY_SMTP_URL",
    ]


def test_bad_values_and_production_rules_are_reported_together() -> None:
    found = problems(
        {
            **PRODUCTION,
            "IDENTITY_PORT": "99999",
            "IDENTITY_ACCESS_TOKEN_TTL": "soon",
            "IDENTITY_ISSUER": "http://id.example.com",
            "IDENTITY_SMTP_URL": "smtp://mail.example.com",
            "IDENTITY_CLIENTS": "nextjs:short",
            "IDENTITY_ADMIN_CLIENTS": "nextjs",
        }
    )
    assert sorted(p.split(":")[0] for p in found) == [
        "IDENTITY_ACCESS_TOKEN_TTL",
        "IDENTITY_CLIENTS",  # shorter than 16; not also "must be set", nor admin's "not in"
        "IDENTITY_ISSUER",
        "IDENTITY_PORT",
        "IDENTITY_SMTP_URL",
    ]


def test_production_smtp_must_force_tls() -> None:
    """Whoever strips STARTTLS from a plain smtp:// session reads the login and live links."""
    for plain in ("smtp://mail.example.com:587", "smtp://u:secret@mail.example.com"):
        (problem,) = problems({**PRODUCTION, "IDENTITY_SMTP_URL": plain})
        assert problem.startswith("IDENTITY_SMTP_URL: must use TLS in production")
        assert "secret@" not in problem
    development = Settings.from_env({"IDENTITY_SMTP_URL": "smtp://127.0.0.1:2525"})
    assert development.smtp_url == "smtp://127.0.0.1:2525"  # a local test server is fine


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("0123456789abcdef0123", "shorter than 32"),
        ("change-me-to-a-long-random-secret-0001", "placeholder"),
        ("Tr0ub4dor&3Tr0ub4dor&3Tr0ub4dor&3Tr0ub4dor&3", "too predictable"),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "too predictable"),
        ("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF", "too predictable"),
        ("1234123412341234123412341234123412341234", "too predictable"),
    ],
)
def test_production_client_secrets_need_real_entropy(secret: str, reason: str) -> None:
    environ = {**PRODUCTION, "IDENTITY_CLIENTS": f"nextjs:{STRONG},backoffice:{secret}"}
    (problem,) = problems(environ)
    assert problem.startswith("IDENTITY_CLIENTS: the secret of 'backoffice' is too weak")
    assert reason in problem
    assert secret not in problem and secret[:8] not in problem
    # Development keeps the 16-character minimum only.
    development = {"IDENTITY_CLIENTS": f"backoffice:{secret}"}
    if len(secret) >= 16:
        assert Settings.from_env(development).clients == {"backoffice": secret}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IDENTITY_ISSUER", "http://id.example.com"),
        ("IDENTITY_GOOGLE_CLIENT_IDS", ""),
        ("IDENTITY_CLIENTS", ""),
        ("IDENTITY_SMTP_URL", ""),  # the development mailer would write mail tokens to the log
        ("IDENTITY_SMTP_URL", "smtp://mail.example.com:587"),  # STARTTLS only if not stripped
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


def test_generated_secrets_pass_and_the_rule_is_what_the_docs_say() -> None:
    draw = random.Random(22)  # fixed: the same secrets every run
    for _ in range(300):
        for raw in (draw.randbytes(16), draw.randbytes(32)):  # `openssl rand -hex 16` / `32`
            assert credentials.weakness(raw.hex()) is None, raw.hex()
        urlsafe = base64.urlsafe_b64encode(draw.randbytes(32)).decode().rstrip("=")
        assert credentials.weakness(urlsafe) is None, urlsafe  # secrets.token_urlsafe(32)
    documented = " ".join((ROOT / "docs" / "security.md").read_text().split())
    assert f"at least {credentials.PRODUCTION_SECRET} characters" in documented
    assert f"{credentials.PRODUCTION_BITS} bits" in documented
