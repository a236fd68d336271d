// identity's back-channel logout token (OpenID Connect Back-Channel Logout 1.0), checked before
// the app ends any session for it.
import { createRemoteJWKSet, jwtVerify } from "jose";

const IDENTITY_URL = process.env.IDENTITY_URL!;
const LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout";

let jwks: ReturnType<typeof createRemoteJWKSet> | undefined;

/** The session id (`sid`) a valid logout token ends; throws for anything else. */
export async function verifyLogoutToken(logoutToken: string): Promise<string> {
  // identity's published keys, fetched when first needed and cached by jose.
  jwks ??= createRemoteJWKSet(new URL(`${IDENTITY_URL}/.well-known/jwks.json`));
  const { payload } = await jwtVerify(logoutToken, jwks, {
    algorithms: ["RS256"],
    // Its own type: neither an access token nor an id_token of ours passes as a logout token.
    typ: "logout+jwt",
    issuer: process.env.IDENTITY_ISSUER ?? IDENTITY_URL,
    audience: process.env.IDENTITY_CLIENT_ID!,
    requiredClaims: ["iat", "exp", "jti", "sid"],
    maxTokenAge: "5 minutes",
  });
  const events = payload.events as Record<string, unknown> | undefined;
  if (typeof events?.[LOGOUT_EVENT] !== "object" || events[LOGOUT_EVENT] === null) {
    throw new Error("not a logout event");
  }
  // The specification forbids a nonce here, so an id_token can never be taken for one.
  if ("nonce" in payload) throw new Error("a logout token has no nonce");
  if (typeof payload.sid !== "string" || payload.sid === "") throw new Error("no session id");
  // jti is not remembered: ending a session that has already ended changes nothing.
  return payload.sid;
}
