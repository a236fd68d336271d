// The Better Auth demo (better-auth/) in Chromium: sign in, two refreshes, sign out, sign in
// again, back-channel logout. Prints what it saw.
// usage: node browser-better-auth.mjs <app url> <artifacts dir> <ms to wait for the access token to expire>
import { ask, disabledAtIdentity, run } from "./driver.mjs";

const [appUrl, artifacts, waitMs] = process.argv.slice(2);

await run(artifacts, async ({ page, shot, text }, seen) => {
  const path = () => new URL(page.url()).pathname;
  const dashboard = async () => {
    await page.waitForSelector("#name");
    return {
      name: await text("#name"),
      email: await text("#email"),
      userId: await text("#user-id"),
      accounts: await text("#accounts"),
      expiresAt: Number(await page.getAttribute("#expires", "data-ms")),
    };
  };
  const signIn = async (picker) => {
    await page.click("#google");
    await page.waitForSelector("#account");
    if (picker) await shot(picker);
    await page.click("#account");
    return dashboard();
  };

  await page.goto(`${appUrl}/dashboard`);
  await page.waitForSelector("#google");
  seen.start = path();
  await shot("better-auth-1-signin");
  seen.signedIn = await signIn("better-auth-2-google-account-picker");
  await shot("better-auth-3-dashboard");
  // The browser's own view of the session: our tokens stay on the server.
  seen.getSession = await page.evaluate(async () => (await fetch("/api/auth/get-session")).text());

  // Each time the access token has expired, the dashboard (a Server Component) refreshes it.
  seen.refreshed = [];
  for (const n of [1, 2]) {
    await page.waitForTimeout(Number(waitMs));
    await page.reload();
    seen.refreshed.push(await dashboard());
    await shot(`better-auth-${3 + n}-after-refresh-${n}`);
  }

  await page.click("#signout");
  await page.waitForURL(/\/signin/);
  await page.waitForSelector("#google");
  await shot("better-auth-6-signed-out");
  seen.identityAfterSignOut = await ask("signed-out");
  await page.goto(`${appUrl}/dashboard`);
  await page.waitForSelector("#google");
  seen.dashboardAfterSignOut = path();

  // Signed in again; then back-channel logout: refused tokens change nothing, identity's own
  // signs this browser out at its next request.
  seen.again = await signIn();
  await shot("better-auth-7-signed-in-again");
  seen.refused = await ask("refused-logout-tokens");
  await page.reload();
  seen.afterRefused = await dashboard();
  // An admin disables the user at identity: identity's logout token (to the other instance) signs
  // this browser out at its next request, long before its access token is due for a refresh.
  seen.backchannel = await disabledAtIdentity(page, {
    dashboard,
    dashboardUrl: `${appUrl}/dashboard`,
    sessionPath: "/api/auth/get-session",
    waitMs,
  });
  await shot("better-auth-8-back-channel-logout");
  await page.goto(`${appUrl}/dashboard`);
  await page.waitForSelector("#google");
  seen.dashboardAfterBackchannel = path();
});
