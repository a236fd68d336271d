import type { GetServerSideProps } from "next";
import { getServerSession } from "next-auth/next";
import { signOut } from "next-auth/react";

import { getCurrentUser, type User } from "../lib/api/backend";
import { authOptions } from "../lib/auth";

type Props = { user: User; tokenExpiresAt: number };

export const getServerSideProps: GetServerSideProps<Props> = async ({ req, res }) => {
  const session = await getServerSession(req, res, authOptions);
  if (!session?.backendToken || session.error) {
    return { redirect: { destination: "/signin", permanent: false } };
  }
  const user = await getCurrentUser(session.backendToken);
  return { props: { user, tokenExpiresAt: session.backendExpiresAt ?? 0 } };
};

export default function Dashboard({ user, tokenExpiresAt }: Props) {
  return (
    <main style={{ fontFamily: "system-ui", maxWidth: 480, margin: "4rem auto" }}>
      <h1>Dashboard</h1>
      <p>
        Signed in as <strong id="name">{user.name}</strong> (<span id="email">{user.email}</span>)
      </p>
      <p>
        Access token valid until{" "}
        <span id="expires" data-ms={tokenExpiresAt}>
          {new Date(tokenExpiresAt).toISOString()}
        </span>
      </p>
      <form method="post" action="/api/rename">
        <input id="new-name" name="name" defaultValue={user.name ?? ""} maxLength={200} />
        <button id="rename" type="submit">
          Rename
        </button>
      </form>
      <p>
        <button id="signout" onClick={() => signOut({ callbackUrl: "/signin" })}>
          Sign out
        </button>
      </p>
    </main>
  );
}
