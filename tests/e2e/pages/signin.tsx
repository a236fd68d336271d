import { signIn } from "next-auth/react";

export default function SignIn() {
  return (
    <main style={{ fontFamily: "system-ui", maxWidth: 480, margin: "4rem auto" }}>
      <h1>Demo app</h1>
      <p>Sign in to see your profile, served by identity.</p>
      <p>
        <button id="google" onClick={() => signIn("google", { callbackUrl: "/dashboard" })}>
          Sign in with Google
        </button>
      </p>
      <p>
        <button id="microsoft" onClick={() => signIn("microsoft", { callbackUrl: "/dashboard" })}>
          Sign in with Microsoft
        </button>
      </p>
    </main>
  );
}
