// Next.js 16's proxy (called middleware.ts before): it runs before every page, route and server
// action, and its response can set cookies. That makes it the place where our tokens are
// refreshed: auth() as a proxy runs the jwt callback of auth.ts, here allowed to refresh.
import type { NextAuthRequest } from "next-auth";
import { type NextFetchEvent, NextRequest, NextResponse } from "next/server";

import { asProxy, auth } from "@/auth";

const withSession = auth((request: NextAuthRequest, _event: NextFetchEvent) => {
  if (!request.auth && request.nextUrl.pathname.startsWith("/dashboard")) {
    return NextResponse.redirect(new URL("/signin", request.nextUrl));
  }
});

export async function proxy(request: NextRequest, event: NextFetchEvent) {
  const response = await asProxy(() => withSession(request, event));
  if (!response || response.headers.has("location")) return response;
  // The pages of this request read the cookies the browser sent. Hand them the session cookie
  // just set, so a Server Component's auth() sees the refreshed tokens and leaves them alone.
  const forwarded = new NextRequest(request.url, { headers: request.headers });
  for (const cookie of new NextResponse(null, { headers: response.headers }).cookies.getAll()) {
    const expired = cookie.maxAge === 0 || (cookie.expires && +cookie.expires <= Date.now());
    if (expired) forwarded.cookies.delete(cookie.name);
    else forwarded.cookies.set(cookie.name, cookie.value);
  }
  const next = NextResponse.next({ request: { headers: forwarded.headers } });
  for (const line of response.headers.getSetCookie()) next.headers.append("set-cookie", line);
  return next;
}

export const config = {
  // Not the back-channel logout route: identity calls it without a browser session.
  matcher: ["/((?!_next/static|_next/image|favicon.ico|api/backchannel-logout).*)"],
};
