// Drives Debian's Chromium through the whole flow; prints what it saw as one JSON line (after
// the steps it asks the test to take, driver.py).
// usage: node browser.mjs <app url> <artifacts dir> <ms to wait for the access token to expire>
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

import { ask, disabledAtIdentity } from "./driver.mjs";

const [appUrl, artifacts, waitMs] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
// One browser context: every tab shares the cookie jar, as tabs of one browser do.
const context = await browser.newContext();
const page = await context.newPage();
const shot = (name, tab = page) => tab.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
const text = async (selector, tab = page) => (await tab.textContent(selector))?.trim();
const dashboard = async () => {
  await page.waitForSelector("#name");
  return {
    name: await text("#name"),
    expiresAt: Number(await page.getAttribute("#expires", "data-ms")),
  };
};
const seen = {};
try {
  await page.goto(`${appUrl}/dashboard`);
  await page.waitForSelector("#google");
  await shot("1-signin");
  await page.click("#google");
  await page.waitForSelector("#account");
  await shot("2-google-account-picker");
  await page.click("#account");
  await page.waitForSelector("#name");
  await shot("3-dashboard");
  seen.name = await text("#name");
  seen.email = await text("#email");
  seen.expiresBefore = Number(await page.getAttribute("#expires", "data-ms"));

  await page.fill("#new-name", "Ada King");
  await page.click("#rename");
  // The form posts, then lands on the dashboard again (already the URL): wait for what the user
  // sees, the new name, before reloading.
  await page.waitForFunction(() => document.querySelector("#name")?.textContent === "Ada King");
  await page.waitForLoadState("load");
  await page.reload();
  await page.waitForSelector("#name");
  seen.renamed = await text("#name");
  await shot("4-renamed");

  // The access token expires; then two tabs load at the same moment, each through another
  // instance of the app: both refresh the same refresh token at once.
  const second = await context.newPage();
  await page.waitForTimeout(Number(waitMs));
  await Promise.all([page.reload(), second.goto(`${appUrl}/dashboard?instance=b`)]);
  await Promise.all([page.waitForSelector("#name"), second.waitForSelector("#name")]);
  seen.firstTab = await text("#name");
  seen.secondTab = await text("#name", second);
  seen.expiresAfter = Number(await page.getAttribute("#expires", "data-ms"));
  await shot("5-first-tab-after-refresh");
  await shot("5-second-tab-after-refresh", second);
  // And the session goes on in both: one live refresh token, not a revoked one.
  await Promise.all([page.reload(), second.reload()]);
  await Promise.all([page.waitForSelector("#name"), second.waitForSelector("#name")]);
  seen.stillSignedIn = [await text("#name"), await text("#name", second)];
  await second.close();

  await page.click("#signout");
  await page.waitForURL(/\/signin/);
  await page.waitForSelector("#google");
  await shot("6-signed-out");
  await page.goto(`${appUrl}/dashboard`);
  await page.waitForSelector("#google");
  seen.afterSignOut = new URL(page.url()).pathname;

  // A second provider: Microsoft Entra ID through NextAuth's generic OIDC provider.
  await page.click("#microsoft");
  await page.waitForSelector("#account");
  await shot("7-microsoft-account-picker");
  await page.click("#account");
  await page.waitForSelector("#name");
  await shot("8-microsoft-dashboard");
  seen.microsoftName = await text("#name");
  seen.microsoftEmail = await text("#email");
  await page.click("#signout");
  await page.waitForURL(/\/signin/);
  await page.waitForSelector("#microsoft");

  // Ada again. Back-channel logout: tokens the app must refuse change nothing; an admin disabling
  // her at identity signs this browser out at its next request, through identity's logout token
  // to the other instance, long before her access token is due for a refresh.
  await page.click("#google");
  await page.waitForSelector("#account");
  await page.click("#account");
  seen.again = await dashboard();
  seen.refused = await ask("refused-logout-tokens");
  await page.reload();
  seen.afterRefused = await dashboard();
  seen.backchannel = await disabledAtIdentity(page, {
    dashboard,
    dashboardUrl: `${appUrl}/dashboard`,
    sessionPath: "/api/auth/session",
    waitMs,
  });
  await shot("9-back-channel-logout");
  await page.goto(`${appUrl}/dashboard`);
  await page.waitForSelector("#google");
  seen.dashboardAfterBackchannel = new URL(page.url()).pathname;
} catch (error) {
  await shot("failure").catch(() => {});
  seen.error = String(error);
}
await browser.close();
console.log(JSON.stringify(seen));
process.exit(seen.error ? 1 : 0);
