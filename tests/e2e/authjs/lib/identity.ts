// identity, called from the app's server: the exchange, refresh and revocation with the app's
// client credentials, and the API with the user's access token.
import { decodeJwt } from "jose";

const IDENTITY_URL = process.env.IDENTITY_URL!;
const clientAuth =
  "Basic " +
  Buffer.from(`${process.env.IDENTITY_CLIENT_ID}:${process.env.IDENTITY_CLIENT_SECRET}`).toString(
    "base64",
  );

/** Our tokens for one session; `sid` names the session in a back-channel logout token. */
export type Tokens = { accessToken: string; refreshToken: string; expiresAt: number; sid: string };

export type User = {
  id: string;
  name: string | null;
  email: string | null;
  email_verified: string | null;
  image: string | null;
  created_at: string;
  updated_at: string;
  accounts: { provider: string; provider_account_id: string }[];
};

/** identity's answer when it is not a success: the status and the `error` code of its body. */
export class IdentityError extends Error {
  constructor(
    public status: number,
    public error: string,
  ) {
    super(`identity answered ${status} ${error}`);
  }
}

async function call<T>(path: string, init: RequestInit): Promise<T> {
  const response = await fetch(`${IDENTITY_URL}${path}`, { ...init, cache: "no-store" });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new IdentityError(response.status, body?.error ?? "request_failed");
  return body as T;
}

async function tokenRequest(params: Record<string, string>): Promise<Tokens> {
  const body = await call<{ access_token: string; refresh_token: string; expires_in: number }>(
    "/token",
    {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Authorization: clientAuth },
      body: new URLSearchParams(params),
    },
  );
  return {
    accessToken: body.access_token,
    refreshToken: body.refresh_token,
    expiresAt: Date.now() + body.expires_in * 1000,
    // Read, not verified: the token comes straight from identity over our authenticated call.
    sid: String(decodeJwt(body.access_token).sid),
  };
}

/** The provider's id_token for our tokens (a new session at identity). */
export function exchange(idToken: string): Promise<Tokens> {
  return tokenRequest({
    grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
    subject_token: idToken,
    subject_token_type: "urn:ietf:params:oauth:token-type:id_token",
  });
}

// One refresh in flight per refresh token: parallel requests of this server share it (it saves
// requests). Another server, or a retry, refreshing the same token at the same moment gets the
// same new refresh token from identity (its reuse interval), so no tab is signed out.
const inFlight = new Map<string, Promise<Tokens>>();
export function refresh(refreshToken: string): Promise<Tokens> {
  let pending = inFlight.get(refreshToken);
  if (!pending) {
    pending = tokenRequest({ grant_type: "refresh_token", refresh_token: refreshToken });
    inFlight.set(refreshToken, pending);
    pending.finally(() => setTimeout(() => inFlight.delete(refreshToken), 10_000)).catch(() => {});
  }
  return pending;
}

/** Whether tokens expiring at `expiresAt` (ms) are due for a refresh. */
export function refreshDue(expiresAt: number | undefined): boolean {
  const margin = Number(process.env.IDENTITY_REFRESH_MARGIN_MS ?? 30_000);
  return expiresAt === undefined || Date.now() >= expiresAt - margin;
}

/** Ends our session: the refresh token works for this even when the access token has expired. */
export async function revoke(refreshToken: string): Promise<void> {
  await call("/revoke", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Authorization: clientAuth },
    body: new URLSearchParams({ token: refreshToken }),
  });
}

export function getCurrentUser(accessToken: string): Promise<User> {
  return call<User>("/users/me", { headers: { Authorization: `Bearer ${accessToken}` } });
}

/** Links another provider's account (its id_token) to the signed-in user. */
export function linkAccount(accessToken: string, idToken: string): Promise<User> {
  return call<User>("/users/me/accounts", {
    method: "POST",
    headers: { Authorization: `Bearer ${accessToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ id_token: idToken }),
  });
}
