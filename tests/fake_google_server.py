"""A local fake Google for trying the service by hand (see README, "Try it").

    python -m tests.fake_google_server [--port 8002]

serves a key set at http://127.0.0.1:8002/oauth2/v3/certs and a fresh signed id_token at
http://127.0.0.1:8002/mint (query parameters override claims: email, sub, name, aud, ...).
"""

from __future__ import annotations

import argparse
import time

from joserfc.jwk import RSAKey

from .fakes import WEB_CLIENT, FakeGoogle, serve_jwks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    google = FakeGoogle(key=RSAKey.generate_key(2048, private=True), clock=time.time)
    with serve_jwks(google, args.port) as url:
        print(f"fake Google: keys at {url}, tokens at http://127.0.0.1:{args.port}/mint")
        print(f"its id_tokens have aud={WEB_CLIENT}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
