// Better Auth's tables (with the identity-tokens plugin's columns), created when the server
// starts. The demo starts its instances one after the other; a deployment runs Better Auth's
// migration once per release instead (npx @better-auth/cli migrate).
export async function register() {
  if (process.env.NEXT_RUNTIME !== "nodejs") return;
  const { getMigrations } = await import("better-auth/db/migration");
  const { options } = await import("./lib/auth");
  const { runMigrations } = await getMigrations(options);
  await runMigrations();
}
