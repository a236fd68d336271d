"""The request bodies: one model each, with its limits (docs/api.md).

An endpoint reads its body strictly (`inputs.form`, `inputs.json_object`) and holds it to its
model here with `inputs.parse`, which answers the first bad field, in the model's order, with a
400 that names the field and never echoes its value. The same models feed the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from identity import addresses
from identity.accounts.email_verification import MAX_TOKEN_LENGTH
from identity.accounts.users import ProfileChange
from identity.errors import InvalidRequest, UnsupportedGrantType

from .inputs import Body, Refusal, Text, parse

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
REFRESH = "refresh_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a type name
MAX_TOKEN = 65_536  # the id_token's own cap (8 KiB) is the verifier's, with its reason code
MAX_NONCE = 512
MAX_INT64 = 2**63 - 1


class ClientCredentials(Body):
    """Form (or JSON) client authentication, read by `clients.ClientAuthenticator` first."""

    client_id: Annotated[str | None, Text(limit=None)] = None
    client_secret: Annotated[str | None, Text(limit=None)] = None


class TokenGrant(Body):
    """What every /token body starts with: a grant_type served here (RFC 6749 §5.2)."""

    grant_type: Annotated[str, Text(required=True)]

    @field_validator("grant_type")
    @classmethod
    def _served(cls, value: str) -> str:
        if value not in (TOKEN_EXCHANGE, REFRESH):
            raise Refusal(
                UnsupportedGrantType("this grant_type is not supported", reason="bad_grant")
            )
        return value


class TokenExchangeBody(ClientCredentials):
    """POST /token, token exchange (RFC 8693): a provider's id_token for our tokens."""

    grant_type: Literal["urn:ietf:params:oauth:grant-type:token-exchange"]
    subject_token_type: Annotated[
        str, Text(required=True), Field(json_schema_extra={"const": ID_TOKEN_TYPE})
    ]
    subject_token: Annotated[str, Text(MAX_TOKEN, required=True)]
    nonce: Annotated[str | None, Text(MAX_NONCE, printable=True)] = None
    audience: Annotated[str | None, Text()] = None
    scope: Annotated[str | None, Text()] = None

    @field_validator("subject_token_type")
    @classmethod
    def _id_token(cls, value: str) -> str:
        if value != ID_TOKEN_TYPE:
            message = f"subject_token_type must be {ID_TOKEN_TYPE}"
            raise Refusal(InvalidRequest(message, reason="bad_type"))
        return value


class RefreshBody(ClientCredentials):
    """POST /token, refresh: a refresh token for its successor."""

    grant_type: Literal["refresh_token"]
    refresh_token: Annotated[str, Text(MAX_TOKEN, required=True)]
    scope: Annotated[str | None, Text()] = None


def token_body(form: dict[str, str]) -> TokenExchangeBody | RefreshBody:
    """A /token body, held to the model of its grant_type."""
    grant = parse(TokenGrant, form).grant_type
    if grant == TOKEN_EXCHANGE:
        return parse(TokenExchangeBody, form)
    return parse(RefreshBody, form)


class CallbackBody(ClientCredentials):
    """POST /auth/oauth/callback: NextAuth's `account` object (other members are ignored)."""

    provider: Annotated[str | None, Text(32)] = None
    expires_at: int | None = Field(default=None, ge=0, le=MAX_INT64)
    id_token: Annotated[str, Text(MAX_TOKEN, required=True)]
    token_type: Annotated[str | None, Text(64)] = None
    scope: Annotated[str | None, Text(2048)] = None
    session_state: Annotated[str | None, Text(2048)] = None
    access_token: Annotated[str | None, Text()] = None
    refresh_token: Annotated[str | None, Text()] = None
    nonce: Annotated[str | None, Text(MAX_NONCE, printable=True)] = None

    @field_validator("provider")  # the configured ones: parse(..., providers=...)
    @classmethod
    def _configured(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value not in (info.context or {}).get("providers", ()):
            raise Refusal(InvalidRequest("provider: not a configured provider"))
        return value

    @field_validator("expires_at", mode="before")
    @classmethod
    def _int64(cls, value: Any) -> int | None:
        if value is None:
            return None
        # A value the 64-bit column cannot hold is the client's mistake (bool is not a number).
        if type(value) is not int or not 0 <= value <= MAX_INT64:
            raise Refusal(InvalidRequest("expires_at: must be an integer from 0 to 2^63-1"))
        return int(value)


class PresentedToken(ClientCredentials):
    """POST /revoke and POST /introspect: the token asked about."""

    token: Annotated[str, Text(MAX_TOKEN, required=True)]
    token_type_hint: Annotated[str | None, Text(limit=None)] = None  # read by nothing here


class LinkBody(Body):
    """POST /users/me/accounts: another provider's id_token to link."""

    id_token: Annotated[str, Text(MAX_TOKEN, required=True)]
    nonce: Annotated[str | None, Text(MAX_NONCE, printable=True)] = None


class VerifyEmailBody(Body):
    """POST /auth/verify-email, as JSON or as the confirm page's form: the address and the
    token of the mailed link."""

    # Anything else reads as no value: the service answers every bad link alike.
    email: Annotated[str | None, Text(320, lenient=True)]
    token: Annotated[str | None, Text(MAX_TOKEN_LENGTH, lenient=True)]


class UserUpdate(Body):
    """PATCH /users/me: every field optional, nothing else allowed, each value checked."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = None
    image: str | None = None
    email: str | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be a string or null")
        value = value.strip()
        if len(value) > 200:
            raise ValueError("at most 200 characters")
        if not value.isprintable():  # control characters, NUL, lone surrogates
            raise ValueError("must be printable text")
        return value or None

    @field_validator("image", mode="before")
    @classmethod
    def _image(cls, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be a string or null")
        parts = urlsplit(value) if value.isprintable() and value.isascii() else None
        # https only: javascript: and data: would run or render in the app, and http: shows
        # every viewer's browser mixed content a network attacker can swap; no user:password@
        # either, which hides the real host from whoever reads the URL.
        if (
            parts is None
            or len(value) > 2048
            or parts.scheme != "https"
            or not parts.hostname
            or "@" in parts.netloc
            or any(c.isspace() for c in value)
        ):
            raise ValueError("must be an https:// URL of at most 2048 characters")
        return value

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")  # an address can be replaced, not removed
        address = addresses.normalize(value)
        if address is None:
            raise ValueError("not a plain address (local@domain, at most 254 characters)")
        return address

    def change(self) -> ProfileChange:
        """The change for `Users.update`: the fields sent, and their values."""
        return ProfileChange(frozenset(self.model_fields_set), self.name, self.image, self.email)


class AdminUserUpdate(Body):
    """PATCH /admin/users/{id}."""

    model_config = ConfigDict(extra="forbid", strict=True)

    disabled: bool

    @field_validator("disabled", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool:
        if type(value) is not bool:
            raise ValueError("required, true or false")
        return value


class AppleNotification(Body):
    """POST /signals/apple: Apple's server-to-server notification, a signed JWS."""

    payload: Annotated[str, Text(MAX_TOKEN, required=True)]


class LogoutTokenBody(Body):
    """POST /signals/backchannel-logout/{provider}: OIDC Back-Channel Logout's form."""

    logout_token: Annotated[str, Text(MAX_TOKEN, required=True)]
