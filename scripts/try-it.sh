#!/usr/bin/env bash
# Try it by hand (README): a fake Google, identity beside it, one sign-in, the user it made, the
# key set, and the same id_token refused the second time. Run it from anywhere after the set-up
# command; it works in a scratch directory of its own (a fresh SQLite file and key), listens on
# ports 8011 and 8012 (TRY_PORT, TRY_FAKE_PORT), and stops both servers when it ends.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
port=${TRY_PORT:-8011}
fake_port=${TRY_FAKE_PORT:-8012}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$work"' EXIT
# Only what this script sets reaches identity (not an IDENTITY_DATABASE_URL of your shell's).
for name in $(compgen -e | grep '^IDENTITY_' || true); do unset "$name"; done

# The fake Google the tests use: its key set, and /mint/google signs an id_token on request.
(cd "$repo" && exec "$python" -m tests.fake_issuers --port "$fake_port") >"$work/fake.log" &
export IDENTITY_GOOGLE_JWKS_URL="http://127.0.0.1:$fake_port/oauth2/v3/certs"
export IDENTITY_GOOGLE_CLIENT_IDS=web-client.apps.googleusercontent.com
(cd "$work" && exec "$python" -m identity serve --port "$port") >"$work/identity.log" 2>&1 &
base="http://127.0.0.1:$port"
for _ in $(seq 150); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "$base/readyz" >/dev/null || { cat "$work/identity.log"; exit 1; }

echo "== a provider's id_token, exchanged for ours (POST /token)"
ID_TOKEN=$(curl -sf "http://127.0.0.1:$fake_port/mint/google?sub=42&email=me@gmail.com")
exchange() {
    curl -s "$base/token" \
        -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
        -d subject_token_type=urn:ietf:params:oauth:token-type:id_token \
        -d subject_token="$ID_TOKEN" -w ' (HTTP %{http_code})\n'
}
TOKENS=$(exchange)
echo "$TOKENS"
ACCESS_TOKEN=$("$python" -c '
import json, sys
print(json.JSONDecoder().raw_decode(sys.argv[1])[0]["access_token"])' "$TOKENS")

echo "== the user, with our access token (GET /users/me)"
curl -s "$base/users/me" -H "Authorization: Bearer $ACCESS_TOKEN" -w ' (HTTP %{http_code})\n'

echo "== the keys that verify it, for your APIs (GET /.well-known/jwks.json)"
curl -s "$base/.well-known/jwks.json" -w ' (HTTP %{http_code})\n'

echo "== the same id_token again: each is exchanged once"
exchange

echo "== Google says the account's sessions were revoked (POST /signals/google, a signed SET)"
SET=$(curl -sf "http://127.0.0.1:$fake_port/mint/google-set?event=sessions-revoked&sub=42")
curl -s "$base/signals/google" -H 'Content-Type: application/secevent+jwt' \
    --data-binary "$SET" -w '(HTTP %{http_code})\n'

echo "== and the access token is refused from then on (GET /users/me)"
curl -s "$base/users/me" -H "Authorization: Bearer $ACCESS_TOKEN" -w ' (HTTP %{http_code})\n'
