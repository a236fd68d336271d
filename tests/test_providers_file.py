"""IDENTITY_PROVIDERS_FILE: any other OIDC issuer, one TOML table each."""

from __future__ import annotations

from pathlib import Path

import pytest

from identity.providers_file import load
from identity.settings import ConfigError, Settings

OKTA = '[providers.okta]\nissuer = "https://x"\nclient_ids = ["x"]\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(text)
    return path


def test_a_complete_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[providers.okta]
issuer = "https://example.okta.com/oauth2/default"
client_ids = ["0oa1example"]
algorithms = ["RS256", "ES256"]
email_domains = ["example.com"]

[providers.keycloak]
issuer = "https://sso.example.com/realms/main"
client_ids = ["web"]
jwks_url = "https://sso.example.com/realms/main/protocol/openid-connect/certs"
""",
    )
    okta, keycloak = load(path)
    assert (okta.name, okta.jwks_url, okta.algorithms, okta.email_domains) == (
        "okta",
        None,
        ("RS256", "ES256"),
        ("example.com",),
    )
    assert (keycloak.algorithms, keycloak.email_domains) == (("RS256",), ())
    assert keycloak.jwks_url is not None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("not toml [", "not valid TOML"),
        ("other = 1", "unknown key 'other'"),
        ('[providers.okta]\nclient_ids = ["x"]\n', "providers.okta.issuer"),
        ('[providers.okta]\nissuer = "ftp://x"\nclient_ids = ["x"]\n', "providers.okta.issuer"),
        ('[providers.okta]\nissuer = "https://x"\nclient_ids = []\n', "providers.okta.client_ids"),
        ('[providers.okta]\nissuer = "https://x"\nclient_ids = "x"\n', "providers.okta.client_ids"),
        (
            '[providers.okta]\nissuer = "https://x"\nclient_ids = ["x"]\nalgorithms = ["HS256"]\n',
            "providers.okta.algorithms",
        ),
        (
            f'{OKTA}email_domains = ["Example.COM"]\n',
            "providers.okta.email_domains",
        ),
        (
            '[providers.okta]\nissuer = "https://x"\nclient_ids = ["x"]\nsecret = "y"\n',
            "providers.okta.secret",
        ),
        ('[providers.Okta]\nissuer = "https://x"\nclient_ids = ["x"]\n', "providers.Okta"),
        ('[providers.google]\nissuer = "https://x"\nclient_ids = ["x"]\n', "providers.google"),
        # "mail" records an address proven by our own link: a provider of that name would
        # pass for it, and never earn (or always lose) linking by address.
        ('[providers.mail]\nissuer = "https://x"\nclient_ids = ["x"]\n', "'mail' is reserved"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"IDENTITY_PROVIDERS_FILE": str(path)})
    message = str(caught.value)
    assert message.startswith(f"IDENTITY_PROVIDERS_FILE: {path}")
    assert key in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("[provider.okta]\n", "unknown key 'provider'; did you mean 'providers'?"),
        (
            f'{OKTA}jwks_uri = "https://x/keys"\n',
            "okta.jwks_uri: unknown key; did you mean 'jwks_url'?",
        ),
        (
            '[providers.okta]\nissuer = "https://x"\nclient_id = ["x"]\n',
            "did you mean 'client_ids'?",
        ),
        (f'{OKTA}email_domain = ["example.com"]\n', "did you mean 'email_domains'?"),
        (f'{OKTA}secret = "y"\n', "okta.secret: unknown key"),
    ],
)
def test_an_unknown_key_names_the_closest_one(tmp_path: Path, text: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"IDENTITY_PROVIDERS_FILE": str(write(tmp_path, text))})
    message = str(caught.value)
    assert hint in message
    assert "did you mean" not in message or hint.endswith("?")


def test_two_providers_with_one_issuer_are_ambiguous(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers.a]\nissuer = "https://x"\nclient_ids = ["1"]\n'
        '[providers.b]\nissuer = "https://x"\nclient_ids = ["2"]\n',
    )
    with pytest.raises(ConfigError, match="issuer 'https://x' is also 'a'"):
        Settings.from_env({"IDENTITY_PROVIDERS_FILE": str(path)})


def test_backchannel_logout_is_off_unless_turned_on_and_must_be_a_boolean(tmp_path: Path) -> None:
    (off,) = load(write(tmp_path, OKTA))
    (on,) = load(write(tmp_path, OKTA + "backchannel_logout = true\n"))
    assert (off.backchannel_logout, on.backchannel_logout) == (False, True)
    with pytest.raises(ConfigError, match=r"providers\.okta\.backchannel_logout: must be true"):
        load(write(tmp_path, OKTA + 'backchannel_logout = "yes"\n'))
