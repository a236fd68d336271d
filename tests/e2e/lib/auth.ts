import { decodeJwt } from "jose";
import type { NextAuthOptions } from "next-auth";
import type { JWT } from "next-auth/jwt";
import GoogleProvider from "next-auth/providers/google";

import { isLoggedOut } from "./logged-out";

const IDENTITY_URL = process.env.IDENTITY_URL!;
const clientAuth =
  "Basic " +
  Buffer.from(`${process.env.IDENTITY_CLIENT_ID}:${process.env.IDENTITY_CLIENT_SECRET}`).toString(
    "base64",
  );

type TokenResponse = { access_token: string; refresh_token: string; expires_in: number };

async function identityPost(path: string, params: Record<string, string>) {
  return fetch(`${IDENTITY_URL}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Authorization: clientAuth },
    body: new URLSearchParams(params),
    cache: "no-store",
  });
}

async function tokenRequest(params: Record<string, string>): Promise<TokenResponse> {
  const response = await identityPost("/token", params);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ?? "token_request_failed");
  return body as TokenResponse;
}

// One refresh in flight per refresh token: parallel requests of this server share it (it saves
// requests). Another server, or a retry, refreshing the same token at the same moment gets the
// same new refresh token from identity (its reuse interval), so no tab is signed out.
const inFlight = new Map<string, Promise<TokenResponse>>();
function refreshOnce(refreshToken: string): Promise<TokenResponse> {
  let pending = inFlight.get(refreshToken);
  if (!pending) {
    pending = tokenRequest({ grant_type: "refresh_token", refresh_token: refreshToken });
    inFlight.set(refreshToken, pending);
    pending.finally(() => setTimeout(() => inFlight.delete(refreshToken), 10_000)).catch(() => {});
  }
  return pending;
}

// Our tokens in NextAuth's token; `backendSid` names the session in a back-channel logout token.
function withTokens(token: JWT, t: TokenResponse): JWT {
  return {
    ...token,
    backendToken: t.access_token,
    backendRefreshToken: t.refresh_token,
    backendExpiresAt: Date.now() + t.expires_in * 1000,
    backendSid: String(decodeJwt(t.access_token).sid),
    error: undefined,
  };
}

const LOGGED_OUT = "LoggedOut";

export const authOptions: NextAuthOptions = {
  providers: [
    GoogleProvider({
      clientId: process.env.GOOGLE_CLIENT_ID!,
      clientSecret: process.env.GOOGLE_CLIENT_SECRET!,
      // Only for the emulator of the tests; in production leave Google's own discovery.
      ...(process.env.GOOGLE_WELL_KNOWN ? { wellKnown: process.env.GOOGLE_WELL_KNOWN } : {}),
    }),
    {
      // Microsoft Entra ID through NextAuth's generic OIDC provider: its id_token goes to
      // identity exactly like Google's.
      id: "microsoft",
      name: "Microsoft",
      type: "oauth",
      wellKnown:
        process.env.MICROSOFT_WELL_KNOWN ??
        `https://login.microsoftonline.com/${process.env.MICROSOFT_TENANT_ID}/v2.0/.well-known/openid-configuration`,
      clientId: process.env.MICROSOFT_CLIENT_ID,
      clientSecret: process.env.MICROSOFT_CLIENT_SECRET,
      authorization: { params: { scope: "openid email profile" } },
      idToken: true,
      checks: ["pkce", "state"],
      profile(profile) {
        return { id: profile.sub, name: profile.name, email: profile.email ?? null, image: null };
      },
    },
  ],
  session: { strategy: "jwt" },
  pages: { signIn: "/signin" },
  callbacks: {
    async jwt({ token, account }) {
      if (account?.id_token) {
        // Right after sign-in: the provider's id_token for our tokens.
        const t = await tokenRequest({
          grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
          subject_token: account.id_token,
          subject_token_type: "urn:ietf:params:oauth:token-type:id_token",
        });
        return withTokens(token, t);
      }
      // Ended by a back-channel logout (pages/api/backchannel-logout.ts). NextAuth v4 stores
      // whatever this returns in the cookie: a token without our tokens or the user, for good.
      if (token.error === LOGGED_OUT) return token;
      if (token.backendSid && (await isLoggedOut(token.backendSid as string))) {
        return { error: LOGGED_OUT };
      }
      const margin = Number(process.env.IDENTITY_REFRESH_MARGIN_MS ?? 30_000);
      if (Date.now() < (token.backendExpiresAt as number) - margin) return token;
      try {
        return withTokens(token, await refreshOnce(token.backendRefreshToken as string));
      } catch {
        // invalid_grant: the session was revoked or expired; the app must sign in again.
        return { ...token, backendToken: undefined, error: "RefreshAccessTokenError" };
      }
    },
    async session({ session, token }) {
      // Signed out: a session without a user (the pages send the browser to /signin).
      if (token.error === LOGGED_OUT) return { expires: session.expires, error: LOGGED_OUT };
      return {
        ...session,
        backendToken: token.backendToken as string | undefined,
        backendExpiresAt: token.backendExpiresAt as number | undefined,
        error: token.error as string | undefined,
      };
    },
  },
  events: {
    async signOut({ token }) {
      // End our session too: the refresh token works even when the access token has expired.
      if (token?.backendRefreshToken) {
        await identityPost("/revoke", { token: token.backendRefreshToken as string });
      }
    },
  },
};
