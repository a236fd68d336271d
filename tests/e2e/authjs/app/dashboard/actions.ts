"use server";

import { cookies } from "next/headers";

import { LINK_COOKIE, signIn, signOut } from "@/auth";

/** Signs in with Microsoft to link that account to the signed-in user (auth.ts, signIn callback). */
export async function linkMicrosoft() {
  (await cookies()).set(LINK_COOKIE, "microsoft-entra-id", {
    httpOnly: true,
    sameSite: "lax",
    secure: process.env.AUTH_URL?.startsWith("https://"),
    path: "/",
    maxAge: 600,
  });
  await signIn("microsoft-entra-id", { redirectTo: "/dashboard" });
}

export async function signOutEverywhere() {
  await signOut({ redirectTo: "/signin" });
}
