"""Client authentication for /token, /revoke and /introspect (IDENTITY_CLIENTS)."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
from collections.abc import Mapping
from urllib.parse import unquote

from starlette.requests import Request

from .errors import InvalidClient, InvalidRequest

logger = logging.getLogger("identity.clients")
PUBLIC_CLIENT = "public"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


class ClientAuthenticator:
    def __init__(self, clients: Mapping[str, str]) -> None:
        self._clients = dict(clients)
        # Compared against when the id is unknown, so a miss costs as much as a hit.
        self._decoy = "x" * 32

    @property
    def required(self) -> bool:
        return bool(self._clients)

    def authenticate(self, request: Request, form: Mapping[str, str]) -> str:
        """The authenticated client id, or (open mode) the declared id or `public`."""
        basic = _basic_credentials(request)
        posted = form.get("client_id"), form.get("client_secret")
        if basic is not None and (posted[0] or posted[1]):
            # RFC 6749 §2.3: a client must not use more than one authentication method.
            raise InvalidRequest("use one client authentication method, not two")
        client_id, secret = basic if basic is not None else posted
        if not self._clients:
            # Open mode (development): an optional, unauthenticated client label.
            if client_id and _CLIENT_ID.match(client_id):
                return client_id
            return PUBLIC_CLIENT
        if not client_id or secret is None:
            raise InvalidClient("client authentication is required", reason="missing_client")
        expected = self._clients.get(client_id)
        ok = hmac.compare_digest(
            (secret or "").encode(), (expected if expected is not None else self._decoy).encode()
        )
        if expected is None or not ok:
            raise InvalidClient("client authentication failed", reason="bad_client")
        return client_id


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
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
