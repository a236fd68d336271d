// Our access token for the signed-in user, for any server code (Server Components included).
import { headers } from "next/headers";

import { auth } from "./auth";
import { IdentityError, refresh, refreshDue } from "./identity";
import { refreshTokenOf, storedTokens, type StoredTokens } from "./identity-plugin";

export type BackendToken = { accessToken: string; expiresAt: number };

/** The access token of this browser's session, refreshed when due; null when signed out. */
export async function backendToken(): Promise<BackendToken | null> {
  const current = await auth.api.getSession({ headers: await headers() });
  if (!current) return null;
  const context = await auth.$context;
  const byId = [{ field: "id", value: current.session.id }];
  const row = await context.adapter.findOne<StoredTokens>({ model: "session", where: byId });
  if (!row?.identityAccessToken || !row.identityRefreshToken || !row.identityExpiresAt) return null;
  const expiresAt = new Date(row.identityExpiresAt).getTime();
  if (!refreshDue(expiresAt)) return { accessToken: row.identityAccessToken, expiresAt };
  // The tokens live on the session row, not in the cookie: any server code may refresh them.
  let tokens;
  try {
    tokens = await refresh(await refreshTokenOf(row, context.secret));
  } catch (error) {
    if (error instanceof IdentityError && error.error === "invalid_grant") {
      // identity has ended the session: so does the app.
      await context.internalAdapter.deleteSession(current.session.token);
      return null;
    }
    throw error;
  }
  // Stored only over the refresh token it replaces: a slower request that refreshed the same
  // parent must not write it back over a newer one (presented after identity's reuse interval,
  // a rotated token is reuse and ends the session). Concurrent refreshes of one parent get the
  // same successor from identity, so whichever writes first, the row holds a live token.
  await context.adapter.update({
    model: "session",
    where: [...byId, { field: "identityRefreshToken", value: row.identityRefreshToken }],
    update: await storedTokens(tokens, context.secret),
  });
  return { accessToken: tokens.accessToken, expiresAt: tokens.expiresAt };
}
