// A Better Auth plugin that gives every session of the app its own session at identity: when a
// sign-in creates a Better Auth session, the provider's id_token (on the account row) is
// exchanged for our tokens, kept on the session row; when the session is deleted (sign-out,
// expiry, revocation), identity's is revoked.
import type { BetterAuthPlugin } from "better-auth";
import { APIError } from "better-auth/api";
import { symmetricDecrypt, symmetricEncrypt } from "better-auth/crypto";

import { IdentityError, exchange, revoke, type Tokens } from "./identity";

const field = { type: "string", required: false, input: false, returned: false } as const;

/** Our tokens as stored on the session row (the refresh token encrypted with the app's secret). */
export type StoredTokens = {
  id: string;
  identityAccessToken: string | null;
  identityRefreshToken: string | null;
  identityExpiresAt: Date | null;
  identitySid: string | null;
};

export async function storedTokens(tokens: Tokens, secret: string) {
  return {
    identityAccessToken: tokens.accessToken,
    // A copy of the database must not carry a credential that outlives the session.
    identityRefreshToken: await symmetricEncrypt({ key: secret, data: tokens.refreshToken }),
    identityExpiresAt: new Date(tokens.expiresAt),
    identitySid: tokens.sid,
  };
}

export function refreshTokenOf(row: StoredTokens, secret: string): Promise<string> {
  return symmetricDecrypt({ key: secret, data: row.identityRefreshToken! });
}

export const identityTokens = () =>
  ({
    id: "identity-tokens",
    schema: {
      session: {
        fields: {
          // returned: false keeps them out of every session Better Auth hands out, the
          // browser's /api/auth/get-session included.
          identityAccessToken: field,
          identityRefreshToken: field,
          identityExpiresAt: { ...field, type: "date" },
          identitySid: { ...field, index: true },
        },
      },
    },
    init: () => ({
      options: {
        databaseHooks: {
          session: {
            create: {
              async before(session, endpoint) {
                // The OAuth callback (/callback/:id) creating this session, and the id_token it
                // has just stored on the user's account row for that provider.
                const providerId = endpoint?.params?.id;
                const accounts = providerId
                  ? await endpoint.context.internalAdapter.findAccounts(session.userId)
                  : [];
                const idToken = accounts.find((a) => a.providerId === providerId)?.idToken;
                if (!endpoint || !idToken) {
                  throw new APIError("FORBIDDEN", { code: "identity_sign_in_required" });
                }
                try {
                  const tokens = await exchange(idToken);
                  return { data: { ...session, ...(await storedTokens(tokens, endpoint.context.secret)) } };
                } catch (error) {
                  // identity's refusal (409 account_conflict, 403 access_denied…) goes back to
                  // the sign-in page as `?error=<code>`: Better Auth's errorCallbackURL.
                  if (error instanceof IdentityError && error.status < 500) {
                    throw new APIError(error.status === 409 ? "CONFLICT" : "FORBIDDEN", {
                      code: error.error,
                      message: error.error,
                    });
                  }
                  throw error;
                }
              },
            },
            delete: {
              async after(session, endpoint) {
                const row = session as unknown as StoredTokens;
                if (row.identityRefreshToken && endpoint) {
                  await revoke(await refreshTokenOf(row, endpoint.context.secret));
                }
              },
            },
          },
        },
      },
    }),
  }) satisfies BetterAuthPlugin;
