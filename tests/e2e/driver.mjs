// What the browser scripts share: Debian's Chromium, screenshots, and asking the test (driver.py)
// to take a step only it can take.
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export async function launch(artifacts) {
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
  // The Microsoft emulator of the Auth.js test speaks HTTPS with a certificate of its own.
  const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
  const shot = (name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
  const text = async (selector) => (await page.textContent(selector))?.trim();
  return { browser, page, shot, text };
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the test to take `step` (with `data`); resolves to its answer. */
export async function ask(step, data = {}) {
  console.log(JSON.stringify({ step, ...data }));
  const { value, done } = await lines.next();
  if (done) throw new Error(`no answer to ${step}`);
  return JSON.parse(value);
}

/** Runs `steps(seen)`, then prints what was seen as the result line (with the error, if any). */
export async function run(artifacts, steps) {
  const session = await launch(artifacts);
  const seen = {};
  try {
    await steps(session, seen);
  } catch (error) {
    await session.shot("failure").catch(() => {});
    seen.error = String(error);
  }
  await session.browser.close();
  console.log(JSON.stringify(seen));
  process.exit(seen.error ? 1 : 0);
}

/**
 * Back-channel logout, as identity sends it: once `dashboard()` shows a freshly refreshed access
 * token (the page is reloaded after `waitMs`, when the old one is due), the test has an admin
 * disable the user at identity; the dashboard is then loaded again and again until the app has
 * signed this browser out (on the sign-in page, and the app's own session endpoint `sessionPath`
 * answers no user). Returns the test's answer with the times (ms since the epoch) and the loads.
 */
export async function disabledAtIdentity(page, { dashboard, dashboardUrl, sessionPath, waitMs }) {
  await page.waitForTimeout(Number(waitMs));
  await page.reload();
  const { expiresAt } = await dashboard();
  const answer = await ask("disable-user");
  let loads = 0;
  for (;;) {
    loads += 1;
    await page.goto(dashboardUrl);
    if (new URL(page.url()).pathname === "/signin") {
      const session = await page.evaluate(async (path) => (await fetch(path)).json(), sessionPath);
      if (!session?.user) break;
    }
    if (Date.now() - answer.disabledAt > 20_000) throw new Error("signed in 20 s after disabling");
    await page.waitForTimeout(100);
  }
  return { ...answer, expiresAt, signedOutAt: Date.now(), loads };
}
