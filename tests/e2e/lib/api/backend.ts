// Calls from the Next.js server to identity's API, with the user's access token.

const IDENTITY_URL = process.env.IDENTITY_URL!;

export type User = {
  id: string;
  name: string | null;
  email: string | null;
  email_verified: string | null;
  image: string | null;
  created_at: string;
  updated_at: string;
  accounts: { provider: string; provider_account_id: string }[];
};

export class BackendError extends Error {
  constructor(
    public status: number,
    public error: string,
  ) {
    super(`${status} ${error}`);
  }
}

export async function backendFetch<T>(
  path: string,
  accessToken: string,
  init: RequestInit = {},
): Promise<T> {
  const response = await fetch(`${IDENTITY_URL}${path}`, {
    ...init,
    headers: { ...init.headers, Authorization: `Bearer ${accessToken}` },
    cache: "no-store",
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new BackendError(response.status, body.error ?? "request_failed");
  }
  return (response.status === 204 ? undefined : await response.json()) as T;
}

export function getCurrentUser(accessToken: string): Promise<User> {
  return backendFetch<User>("/users/me", accessToken);
}

export function updateProfile(
  accessToken: string,
  changes: { name?: string | null; image?: string | null; email?: string },
): Promise<User> {
  return backendFetch<User>("/users/me", accessToken, {
    method: "PATCH",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(changes),
  });
}
