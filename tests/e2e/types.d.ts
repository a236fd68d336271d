// What lib/auth.ts hands to server code in the session. Without this declaration
// `session.backendToken` is not a property TypeScript knows, and `next build` fails its type check.
import "next-auth";

declare module "next-auth" {
  interface Session {
    backendToken?: string;
    backendExpiresAt?: number;
    error?: string;
  }
}
