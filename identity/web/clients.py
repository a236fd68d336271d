"""Client authentication (IDENTITY_CLIENTS) and the admin API's (IDENTITY_ADMIN_CLIENTS).

When clients are configured, every endpoint that issues, revokes or describes tokens —
/token, /auth/oauth/callback, /revoke, /introspect — requires HTTP Basic or form
`client_id`/`client_secret` (one of the two, not both), compared in constant time. Open mode
(development) takes an optional unauthenticated client label instead.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from starlette.datastructures import Headers

from identity.credentials import CLIENT_ID
from identity.errors import AccessDenied, InvalidClient, InvalidRequest

PUBLIC_CLIENT = "public"


@dataclass(frozen=True, slots=True)
class Caller:
    client_id: str
    authenticated: bool  # False in open mode: the id is only a label


class ClientAuthenticator:
    def __init__(self, clients: Mapping[str, str], admins: Collection[str] = ()) -> None:
        self._clients = dict(clients)
        self._admins = frozenset(admins)
        # Compared against when the id is unknown, so a miss costs as much as a hit.
        self._decoy = "x" * 32

    @property
    def required(self) -> bool:
        return bool(self._clients)

    def authenticate(self, headers: Headers, form: Mapping[str, str]) -> Caller:
        """The calling client; InvalidClient when clients are configured and it is not one."""
        basic = _basic_credentials(headers)
        posted = form.get("client_id"), form.get("client_secret")
        if basic is not None and (posted[0] or posted[1]):
            # RFC 6749 §2.3: a client must not use more than one authentication method.
            raise InvalidRequest("use one client authentication method, not two")
        client_id, secret = basic if basic is not None else posted
        if not self._clients:
            # Open mode (development): an optional, unauthenticated client label.
            label = client_id if client_id and CLIENT_ID.fullmatch(client_id) else PUBLIC_CLIENT
            return Caller(label, authenticated=False)
        if not client_id or secret is None:
            raise InvalidClient("client authentication is required", reason="missing_client")
        return Caller(self._check(client_id, secret), authenticated=True)

    def admin(self, headers: Headers) -> str:
        """The admin client calling; 401 without valid Basic credentials, 403 if not an admin."""
        if not self._admins:
            raise AccessDenied("the admin API is not enabled (IDENTITY_ADMIN_CLIENTS)")
        basic = _basic_credentials(headers)
        if basic is None:
            raise InvalidClient("admin credentials are required", reason="missing_client")
        client_id = self._check(*basic)
        if client_id not in self._admins:
            raise AccessDenied("this client may not use the admin API", reason="not_admin")
        return client_id

    def _check(self, client_id: str, secret: str) -> str:
        expected = self._clients.get(client_id)
        ok = hmac.compare_digest(
            secret.encode("utf-8", "surrogatepass"),
            (expected if expected is not None else self._decoy).encode(),
        )
        if expected is None or not ok:
            raise InvalidClient("client authentication failed", reason="bad_client")
        return client_id


def _basic_credentials(headers: Headers) -> tuple[str, str] | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials", reason="bad_client") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic credentials", reason="bad_client")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote(client_id), unquote(secret)
