import { headers } from "next/headers";
import { redirect } from "next/navigation";

import { auth } from "@/lib/auth";

// identity's refusals, by the code the identity-tokens plugin puts in the address.
const MESSAGES: Record<string, string> = {
  account_conflict:
    "This email address belongs to an account that signs in another way. Sign in with that " +
    "provider first.",
  access_denied: "This account is disabled.",
};

async function signInWithGoogle() {
  "use server";
  const { url } = await auth.api.signInSocial({
    body: { provider: "google", callbackURL: "/dashboard", errorCallbackURL: "/signin" },
    headers: await headers(),
  });
  redirect(url!);
}

export default async function SignIn({ searchParams }: PageProps<"/signin">) {
  const { error } = await searchParams;
  const code = typeof error === "string" ? error : undefined;
  return (
    <main>
      <h1>Demo app (Better Auth)</h1>
      <p>Sign in to see your profile, served by identity.</p>
      {code && (
        <p id="error" role="alert" data-code={code} style={{ color: "#b00020" }}>
          {MESSAGES[code] ?? "Signing in did not work. Please try again."}
        </p>
      )}
      <form action={signInWithGoogle}>
        <button id="google">Sign in with Google</button>
      </form>
    </main>
  );
}
