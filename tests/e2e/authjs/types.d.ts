// What auth.ts keeps in the session cookie (JWT) and hands to server code (Session). Without
// these declarations `session.backendToken` is not a property TypeScript knows.
import "next-auth";
import "next-auth/jwt";

declare module "next-auth" {
  interface Session {
    backendToken?: string;
    backendExpiresAt?: number;
  }
}

declare module "next-auth/jwt" {
  interface JWT {
    backendToken?: string;
    backendRefreshToken?: string;
    backendExpiresAt?: number;
    backendSid?: string;
  }
}
