import { signIn } from "@/auth";

// identity's refusals, by the code auth.ts puts in the address (`?error=account_conflict`).
const MESSAGES: Record<string, string> = {
  account_conflict:
    "This email address belongs to an account that signs in another way. Sign in with that " +
    "provider first, then link this one from your dashboard.",
  access_denied: "This account is disabled.",
};

export default async function SignIn({ searchParams }: PageProps<"/signin">) {
  const { error } = await searchParams;
  const code = typeof error === "string" ? error : undefined;
  return (
    <main>
      <h1>Demo app (Auth.js v5)</h1>
      <p>Sign in to see your profile, served by identity.</p>
      {code && (
        <p id="error" role="alert" data-code={code} style={{ color: "#b00020" }}>
          {MESSAGES[code] ?? "Signing in did not work. Please try again."}
        </p>
      )}
      <form
        action={async () => {
          "use server";
          await signIn("google", { redirectTo: "/dashboard" });
        }}
      >
        <button id="google">Sign in with Google</button>
      </form>
      <form
        action={async () => {
          "use server";
          await signIn("microsoft-entra-id", { redirectTo: "/dashboard" });
        }}
      >
        <button id="microsoft">Sign in with Microsoft</button>
      </form>
    </main>
  );
}
