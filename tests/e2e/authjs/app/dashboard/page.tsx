import { redirect } from "next/navigation";

import { auth } from "@/auth";
import { IdentityError, getCurrentUser } from "@/lib/identity";

import { linkMicrosoft, signOutEverywhere } from "./actions";

export default async function Dashboard({ searchParams }: PageProps<"/dashboard">) {
  // A Server Component reads the session; the proxy has refreshed its tokens if they were due.
  const session = await auth();
  if (!session?.backendToken) redirect("/signin");
  const user = await getCurrentUser(session.backendToken).catch((error) => {
    if (error instanceof IdentityError && error.status === 401) redirect("/signin");
    throw error;
  });
  const { linked, error } = await searchParams;
  return (
    <main>
      <h1>Dashboard</h1>
      {typeof linked === "string" && <p id="linked">Linked your {linked} account.</p>}
      {typeof error === "string" && (
        <p id="error" role="alert" data-code={error} style={{ color: "#b00020" }}>
          {error === "account_conflict"
            ? "That account already belongs to another user."
            : "Linking did not work."}
        </p>
      )}
      <p>
        Signed in as <strong id="name">{user.name}</strong> (<span id="email">{user.email}</span>)
      </p>
      <p>
        identity user <code id="user-id">{user.id}</code>, accounts:{" "}
        <span id="accounts">{user.accounts.map((a) => a.provider).join(", ")}</span>
      </p>
      <p>
        Access token valid until{" "}
        <span id="expires" data-ms={session.backendExpiresAt}>
          {new Date(session.backendExpiresAt ?? 0).toISOString()}
        </span>
      </p>
      <form action={linkMicrosoft}>
        <button id="link-microsoft">Link a Microsoft account</button>
      </form>
      <form action={signOutEverywhere}>
        <button id="signout">Sign out</button>
      </form>
    </main>
  );
}
