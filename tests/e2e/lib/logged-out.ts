// Sessions identity has ended (back-channel logout), seen by every instance of the app: one empty
// file per session, named by the hash of its id, in a directory they share. A deployment on
// several hosts keeps the same set in its shared store (Redis, its database).
import { createHash } from "node:crypto";
import { mkdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";

// (Outside the build: the bundler is told not to trace it.)
const DIRECTORY = process.env.LOGGED_OUT_DIR ?? join(process.cwd(), ".logged-out");

function entry(sid: string): string {
  return join(/* turbopackIgnore: true */ DIRECTORY, createHash("sha256").update(sid).digest("hex"));
}

export async function markLoggedOut(sid: string): Promise<void> {
  await mkdir(DIRECTORY, { recursive: true });
  await writeFile(entry(sid), "");
}

// Entries are kept: identity never reuses a session id, and a session cookie outlives the
// access token. A store with expiry keeps them for the app's session lifetime (30 days here).
export async function isLoggedOut(sid: string): Promise<boolean> {
  return stat(/* turbopackIgnore: true */ entry(sid)).then(
    () => true,
    () => false,
  );
}
