// Drives Debian's Chromium through the whole flow; prints what it saw as one JSON line.
// usage: node browser.mjs <app url> <artifacts dir> <ms to wait for the access token to expire>
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

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
const page = await browser.newPage();
const shot = (name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
const text = async (selector) => (await page.textContent(selector))?.trim();
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

  await page.waitForTimeout(Number(waitMs));
  await page.reload();
  await page.waitForSelector("#name");
  seen.nameAfterRefresh = await text("#name");
  seen.expiresAfter = Number(await page.getAttribute("#expires", "data-ms"));
  await shot("5-after-token-refresh");

  await page.click("#signout");
  await page.waitForURL(/\/signin/);
  await page.waitForSelector("#google");
  await shot("6-signed-out");
  await page.goto(`${appUrl}/dashboard`);
  await page.waitForSelector("#google");
  seen.afterSignOut = new URL(page.url()).pathname;
} catch (error) {
  await shot("failure").catch(() => {});
  seen.error = String(error);
}
await browser.close();
console.log(JSON.stringify(seen));
process.exit(seen.error ? 1 : 0);
