"""`identity.verifier`: the downstream verifier, as the server's distribution names it.

The code is the distribution `identity-exchange-verifier` (import name `identity_verifier`, in
`verifier/` of this repository), which services install alone: httpx and cryptography, none of
the server's dependencies. The server depends on it, so `from identity.verifier import
TokenVerifier` keeps working where the server is installed (docs/verifying.md). A package rather
than a module, so that git follows the code to its new place.
"""

from identity_verifier import AccessClaims, InvalidAccessToken, TokenVerifier, VerifierUnavailable

__all__ = ["AccessClaims", "InvalidAccessToken", "TokenVerifier", "VerifierUnavailable"]
