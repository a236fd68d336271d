"""The OpenID discovery document (RFC 8414 / OpenID Connect Discovery 1.0), encoded once.

There is no `authorization_endpoint`: no grant here sends a browser to us. What a standard OIDC
client library reads to configure itself for verifying our tokens and calling our endpoints is
here (docs/api.md).
"""

from __future__ import annotations

import orjson

from .requests import REFRESH, TOKEN_EXCHANGE

GRANT_TYPES = [TOKEN_EXCHANGE, REFRESH]
CLAIMS = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "jti",
    "sid",
    "client_id",
    "scope",
    "email",
    "email_verified",
    "name",
    "picture",
]


def document(issuer: str, *, client_auth: bool) -> bytes:
    auth_methods = ["client_secret_basic", "client_secret_post"] if client_auth else ["none"]
    return orjson.dumps(
        {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "token_endpoint": f"{issuer}/token",
            "revocation_endpoint": f"{issuer}/revoke",
            "introspection_endpoint": f"{issuer}/introspect",
            "userinfo_endpoint": f"{issuer}/userinfo",
            "grant_types_supported": GRANT_TYPES,
            "response_types_supported": ["none"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported": auth_methods,
            "scopes_supported": ["openid", "email", "profile"],
            "claims_supported": CLAIMS,
            # OpenID Connect Back-Channel Logout 1.0: clients with a logout URI
            # (IDENTITY_BACKCHANNEL_LOGOUT_URIS) get a logout token naming the session.
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
            "service_documentation": f"{issuer}/openapi.json",
        },
        option=orjson.OPT_INDENT_2,
    )
