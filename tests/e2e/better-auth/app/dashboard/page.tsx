import { headers } from "next/headers";
import { redirect } from "next/navigation";

import { auth } from "@/lib/auth";
import { getCurrentUser } from "@/lib/identity";
import { backendToken } from "@/lib/session";

async function signOut() {
  "use server";
  // Deletes the Better Auth session; the identity-tokens plugin then revokes identity's.
  await auth.api.signOut({ headers: await headers() });
  redirect("/signin");
}

export default async function Dashboard() {
  const token = await backendToken();
  if (!token) redirect("/signin");
  const user = await getCurrentUser(token.accessToken);
  return (
    <main>
      <h1>Dashboard</h1>
      <p>
        Signed in as <strong id="name">{user.name}</strong> (<span id="email">{user.email}</span>)
      </p>
      <p>
        identity user <code id="user-id">{user.id}</code>, accounts:{" "}
        <span id="accounts">{user.accounts.map((a) => a.provider).join(", ")}</span>
      </p>
      <p>
        Access token valid until{" "}
        <span id="expires" data-ms={token.expiresAt}>
          {new Date(token.expiresAt).toISOString()}
        </span>
      </p>
      <form action={signOut}>
        <button id="signout">Sign out</button>
      </form>
    </main>
  );
}
