// The Auth.js v5 demo (authjs/) in Chromium: sign in, two refreshes, sign out, identity's 409
// shown on our page, linking a second provider, back-channel logout. Prints what it saw.
// usage: node browser-authjs.mjs <app url> <artifacts dir> <ms to wait for the access token to expire>
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

  await page.goto(`${appUrl}/dashboard`);
  await page.waitForSelector("#google");
  seen.start = path();
  await shot("authjs-1-signin");
  await page.click("#google");
  await page.waitForSelector("#account");
  await shot("authjs-2-google-account-picker");
  await page.click("#account");
  seen.signedIn = await dashboard();
  await shot("authjs-3-dashboard");

  // Each time the access token has expired, the next page load refreshes it (in the proxy).
  seen.refreshed = [];
  for (const n of [1, 2]) {
    await page.waitForTimeout(Number(waitMs));
    await page.reload();
    seen.refreshed.push(await dashboard());
    await shot(`authjs-${3 + n}-after-refresh-${n}`);
  }

  await page.click("#signout");
  await page.waitForURL(/\/signin/);
  await page.waitForSelector("#google");
  await shot("authjs-6-signed-out");
  seen.identityAfterSignOut = await ask("signed-out");
  await page.goto(`${appUrl}/dashboard`);
  await page.waitForSelector("#google");
  seen.dashboardAfterSignOut = path();

  // A Microsoft account claiming Ada's address: identity's 409, shown on our sign-in page.
  await page.click("#microsoft");
  await page.waitForSelector("#account-2");
  await shot("authjs-7-microsoft-account-picker");
  await page.click("#account-2");
  await page.waitForSelector("#error");
  seen.conflict = {
    path: path(),
    code: await page.getAttribute("#error", "data-code"),
    message: await text("#error"),
  };
  await shot("authjs-8-account-conflict");

  // Signed in with Google again, Ada links that Microsoft account from her dashboard.
  await page.click("#google");
  await page.waitForSelector("#account");
  await page.click("#account");
  await dashboard();
  await page.click("#link-microsoft");
  await page.waitForSelector("#account-2");
  await page.click("#account-2");
  await page.waitForSelector("#linked");
  seen.linked = { ...(await dashboard()), notice: await text("#linked") };
  // The link marker was spent: a later Microsoft sign-in is a sign-in again.
  seen.linkCookieLeft = (await page.context().cookies()).some((c) => c.name === "link-provider");
  await shot("authjs-9-linked");

  // Back-channel logout: tokens the app must refuse change nothing; identity's own signs this
  // browser out at its next request.
  seen.refused = await ask("refused-logout-tokens");
  await page.reload();
  seen.afterRefused = await dashboard();
  // An admin disables the user at identity: identity's logout token (to the other instance) signs
  // this browser out at its next request, long before its access token is due for a refresh.
  seen.backchannel = await disabledAtIdentity(page, {
    dashboard,
    dashboardUrl: `${appUrl}/dashboard`,
    sessionPath: "/api/auth/session",
    waitMs,
  });
  await shot("authjs-10-back-channel-logout");
  await page.goto(`${appUrl}/dashboard`);
  await page.waitForSelector("#google");
  seen.dashboardAfterBackchannel = path();
});
