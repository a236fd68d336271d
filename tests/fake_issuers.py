"""Fake Google and Microsoft for trying the service by hand (README, "Try it").

    python -m tests.fake_issuers [--port 8002]

Serves each fake's key set (and Microsoft's discovery document) on loopback and signs fresh
id_tokens at `GET /mint/google?sub=…&email=…` and `GET /mint/microsoft?…`, and Google's security
event tokens at `GET /mint/google-set?event=sessions-revoked&sub=…` (docs/signals.md); it prints
the variables that point identity at it. The same fakes the tests use (tests/fakes.py).
"""

from __future__ import annotations

import argparse
import contextlib
import threading

from joserfc.jwk import RSAKey

from .fakes import MS_CLIENT, MS_TENANT, WEB_CLIENT, http_google, http_microsoft, serve_issuers
from .security_events import GOOGLE_SUB, google_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    with serve_issuers(port=args.port) as served:
        google = served.add(http_google(RSAKey.generate_key(2048, private=True), served.base))
        served.minters["google-set"] = lambda query: google_set(
            google, query.get("event", "verification"), sub=query.get("sub", GOOGLE_SUB)
        )
        served.add(http_microsoft(RSAKey.generate_key(2048, private=True), served.base))
        print("Point identity at these fakes:", flush=True)
        print(f"  export IDENTITY_GOOGLE_JWKS_URL={google.jwks_url}")
        print(f"  export IDENTITY_GOOGLE_CLIENT_IDS={WEB_CLIENT}")
        print(f"  export IDENTITY_MICROSOFT_AUTHORITY={served.base}/ms")
        print(f"  export IDENTITY_MICROSOFT_CLIENT_IDS={MS_CLIENT}")
        print(f"  export IDENTITY_MICROSOFT_TENANTS={MS_TENANT}")
        print(f"Tokens: curl '{served.base}/mint/google?sub=42&email=me@gmail.com'")
        print(f"Events: curl '{served.base}/mint/google-set?event=sessions-revoked&sub=42'")
        print("  | curl --data-binary @- -H 'Content-Type: application/secevent+jwt' \\")
        print("    http://127.0.0.1:8001/signals/google", flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it quietly
            threading.Event().wait()


if __name__ == "__main__":
    main()
