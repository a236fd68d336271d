import "next-auth";

declare module "next-auth" {
  interface Session {
    backendToken?: string;
    backendExpiresAt?: number;
    error?: string;
  }
}
