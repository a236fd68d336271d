"""Verifying identity's access tokens in other Python services (docs/verifying.md).

    from identity_verifier import InvalidAccessToken, TokenVerifier, VerifierUnavailable

The distribution `identity-exchange-verifier` needs httpx and cryptography only; the server
re-exports the same names as `identity.verifier`.
"""

from .verifier import AccessClaims, InvalidAccessToken, TokenVerifier, VerifierUnavailable

__all__ = ["AccessClaims", "InvalidAccessToken", "TokenVerifier", "VerifierUnavailable"]
