import { AsyncLocalStorage } from "node:async_hooks";

import NextAuth, { type Account } from "next-auth";
import type { JWT } from "next-auth/jwt";
import Google from "next-auth/providers/google";
import MicrosoftEntraID from "next-auth/providers/microsoft-entra-id";
import { cookies } from "next/headers";

import {
  IdentityError,
  exchange,
  linkAccount,
  refresh,
  refreshDue,
  revoke,
  type Tokens,
} from "@/lib/identity";
import { isLoggedOut } from "@/lib/logged-out";

/** Set by the dashboard's "link" action: the next sign-in with this provider links, not signs in. */
export const LINK_COOKIE = "link-provider";

// What the signIn callback got from identity for one sign-in, for the jwt callback that follows.
const exchanged = new WeakMap<Account, Tokens>();

function withTokens(token: JWT, tokens: Tokens): JWT {
  return {
    ...token,
    backendToken: tokens.accessToken,
    backendRefreshToken: tokens.refreshToken,
    backendExpiresAt: tokens.expiresAt,
    backendSid: tokens.sid,
  };
}

// identity's refusals (409 account_conflict, 403 access_denied…) shown on our own page, by code.
function refusal(page: string, error: unknown): string {
  if (error instanceof IdentityError && error.status < 500) {
    return `${page}?${new URLSearchParams({ error: error.error })}`;
  }
  throw error;
}

// The jwt callback runs in the proxy, in route handlers and in Server Components. A Server
// Component cannot store the session cookie: refreshing there would leave the browser holding the
// parent refresh token, which presented again after identity's reuse interval is reuse, and
// identity ends the session. So tokens are refreshed only in the proxy (proxy.ts), which runs
// before every page and route and whose response stores the cookie.
const proxyScope = new AsyncLocalStorage<true>();
export const asProxy = <T>(run: () => T): T => proxyScope.run(true, run);

export const { handlers, auth, signIn, signOut } = NextAuth({
  providers: [
    Google,
    MicrosoftEntraID({
      // Name and address from the id_token, without the default's Microsoft Graph photo call.
      profile: (profile) => ({
        id: profile.sub,
        name: profile.name,
        email: profile.email ?? null,
        image: null,
      }),
    }),
  ],
  session: { strategy: "jwt" },
  pages: { signIn: "/signin" },
  callbacks: {
    async signIn({ account }) {
      if (!account?.id_token) return false;
      const jar = await cookies();
      if (jar.get(LINK_COOKIE)?.value === account.provider) {
        // Linking: the provider's id_token joins the signed-in user; the session stays as it is.
        jar.delete(LINK_COOKIE);
        const session = await auth();
        if (!session?.backendToken) return "/signin";
        try {
          await linkAccount(session.backendToken, account.id_token);
        } catch (error) {
          return refusal("/dashboard", error);
        }
        return `/dashboard?linked=${account.provider}`;
      }
      try {
        exchanged.set(account, await exchange(account.id_token));
      } catch (error) {
        return refusal("/signin", error);
      }
      return true;
    },
    async jwt({ token, account }) {
      if (account) {
        // Right after sign-in: our tokens, from the signIn callback's exchange.
        const tokens = exchanged.get(account);
        if (!tokens) throw new Error("signed in without an exchange");
        return withTokens(token, tokens);
      }
      // Ended by a back-channel logout: null signs this browser out.
      if (token.backendSid && (await isLoggedOut(token.backendSid))) return null;
      if (!proxyScope.getStore() || !refreshDue(token.backendExpiresAt)) return token;
      try {
        return withTokens(token, await refresh(token.backendRefreshToken!));
      } catch (error) {
        // invalid_grant: the session ended at identity (revoked, expired, reused).
        if (error instanceof IdentityError && error.error === "invalid_grant") return null;
        return token; // identity unreachable: the next request tries again
      }
    },
    session({ session, token }) {
      return {
        ...session,
        backendToken: token.backendToken,
        backendExpiresAt: token.backendExpiresAt,
      };
    },
  },
  events: {
    async signOut(message) {
      // End our session too, not only the cookie.
      if ("token" in message && message.token?.backendRefreshToken) {
        await revoke(message.token.backendRefreshToken);
      }
    },
  },
});
