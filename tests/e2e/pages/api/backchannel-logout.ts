// identity POSTs `logout_token` here when a session of this app ends there (sign-out elsewhere,
// a disabled user, a detected refresh-token reuse): the browser holding that session is signed
// out at its next request (lib/auth.ts, jwt callback).
import type { NextApiRequest, NextApiResponse } from "next";

import { verifyLogoutToken } from "../../lib/backchannel";
import { markLoggedOut } from "../../lib/logged-out";

export default async function backchannelLogout(req: NextApiRequest, res: NextApiResponse) {
  res.setHeader("Cache-Control", "no-store");
  if (req.method !== "POST") {
    res.setHeader("Allow", "POST");
    return res.status(405).end();
  }
  // The form body, parsed by Next.js's body parser.
  const logoutToken = req.body?.logout_token;
  let sid: string;
  try {
    if (typeof logoutToken !== "string") throw new Error("no logout_token");
    sid = await verifyLogoutToken(logoutToken);
  } catch {
    return res.status(400).json({ error: "invalid_request" });
  }
  await markLoggedOut(sid);
  res.status(200).end();
}
