import { type BetterAuthOptions, betterAuth } from "better-auth";
import { nextCookies } from "better-auth/next-js";
import { genericOAuth } from "better-auth/plugins";
import { SqliteDialect } from "kysely";
import Database from "libsql";

import { identityTokens } from "./identity-plugin";

export const options = {
  // SQLite through libsql (better-sqlite3's interface, prebuilt for each platform), given to
  // Better Auth as a Kysely dialect; two instances of the app share the file.
  database: {
    dialect: new SqliteDialect({
      database: new Database(process.env.BETTER_AUTH_DATABASE ?? "better-auth.db", { timeout: 5000 }),
    }),
    type: "sqlite",
  },
  plugins: [
    genericOAuth({
      config: [
        {
          // Google by its OpenID Connect discovery document (the tests point it at an emulator).
          providerId: "google",
          discoveryUrl:
            process.env.GOOGLE_DISCOVERY_URL ??
            "https://accounts.google.com/.well-known/openid-configuration",
          clientId: process.env.GOOGLE_CLIENT_ID!,
          clientSecret: process.env.GOOGLE_CLIENT_SECRET!,
          scopes: ["openid", "email", "profile"],
          pkce: true,
        },
      ],
    }),
    identityTokens(),
    nextCookies(), // last: sets the cookies of server actions
  ],
  telemetry: { enabled: false },
} satisfies BetterAuthOptions;

export const auth = betterAuth(options);
