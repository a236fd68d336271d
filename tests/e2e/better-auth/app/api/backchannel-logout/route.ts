// identity POSTs `logout_token` here when a session of this app ends there (sign-out elsewhere,
// a disabled user, a detected refresh-token reuse): the Better Auth sessions holding that
// identity session are deleted, so the browser is signed out at its next request.
import { auth } from "@/lib/auth";
import { verifyLogoutToken } from "@/lib/backchannel";

const NO_STORE = { "Cache-Control": "no-store" };

export async function POST(request: Request) {
  const form = await request.formData().catch(() => null);
  const logoutToken = form?.get("logout_token");
  let sid: string;
  try {
    if (typeof logoutToken !== "string") throw new Error("no logout_token");
    sid = await verifyLogoutToken(logoutToken);
  } catch {
    return Response.json({ error: "invalid_request" }, { status: 400, headers: NO_STORE });
  }
  const context = await auth.$context;
  await context.adapter.deleteMany({ model: "session", where: [{ field: "identitySid", value: sid }] });
  return new Response(null, { status: 200, headers: NO_STORE });
}
