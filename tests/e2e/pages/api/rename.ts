import type { NextApiRequest, NextApiResponse } from "next";
import { getServerSession } from "next-auth/next";

import { updateProfile } from "../../lib/api/backend";
import { authOptions } from "../../lib/auth";

export default async function rename(req: NextApiRequest, res: NextApiResponse) {
  if (req.method !== "POST") return res.status(405).end();
  const session = await getServerSession(req, res, authOptions);
  if (!session?.backendToken) return res.redirect(303, "/signin");
  await updateProfile(session.backendToken, { name: String(req.body.name ?? "") });
  return res.redirect(303, "/dashboard");
}
