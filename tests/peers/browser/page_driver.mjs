// Drives tenax's upload page in headless Chromium (Debian's
// /usr/bin/chromium) through playwright-core, for
// crates/cli/tests/browser_page.rs.
//
// Usage: node page_driver.mjs '{"scenario": …, "base": "http://127.0.0.1:PORT", …}'
// Prints one JSON line on stdout at the end: {"ok": true, …} or
// {"ok": false, "error": "…"}; progress goes to stderr. Every wait is
// bounded (the `timeout` parameter, in ms, default 120 s).

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

// ESM imports ignore NODE_PATH: resolve the CommonJS way, then import.
let chromium;
try {
  const entry = createRequire(import.meta.url).resolve("playwright-core");
  const playwright = await import(pathToFileURL(entry).href);
  chromium = playwright.chromium ?? playwright.default?.chromium;
  if (!chromium) throw new Error("no chromium export");
} catch (error) {
  console.log(JSON.stringify({
    ok: false,
    error: `cannot load playwright-core (run scripts/test to install the peers; NODE_PATH=${process.env.NODE_PATH}): ${error}`,
  }));
  process.exit(2);
}

const params = JSON.parse(process.argv[2] ?? "{}");
const TIMEOUT = params.timeout ?? 120000;
const MIB = 1024 * 1024;
const log = (...args) => console.error(`[${new Date().toISOString().slice(11, 23)}]`, ...args);

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];

let shotIndex = 0;
async function shot(page, name, options = {}) {
  if (!params.shots) return;
  fs.mkdirSync(params.shots, { recursive: true });
  shotIndex += 1;
  const file = path.join(params.shots, `${params.scenario}-${String(shotIndex).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true, ...options });
  log("screenshot", file);
}

/** The row of the upload named `name`. */
const row = (page, name) => page.locator(`#queue li.upload[data-name="${name}"]`);

/** Waits until the row is in one of `states` (and acked >= minAcked). */
async function waitRow(page, name, states, minAcked = 0, timeout = TIMEOUT) {
  await page.waitForFunction(
    ([name, states, minAcked]) => {
      const el = [...document.querySelectorAll("#queue li.upload")].find((li) => li.dataset.name === name);
      return !!el && states.includes(el.dataset.state) && Number(el.dataset.acked) >= minAcked;
    },
    [name, states, minAcked],
    { timeout, polling: 20 },
  );
  return rowInfo(page, name);
}

async function rowInfo(page, name) {
  return row(page, name).evaluate((el) => ({
    state: el.dataset.state,
    acked: Number(el.dataset.acked),
    url: el.dataset.url || null,
    status: el.querySelector(".status").textContent,
    numbers: el.querySelector(".numbers").textContent,
  }));
}

/** Limits the page's upload bandwidth (bytes/s) through DevTools. */
async function throttle(context, page, bytesPerSecond) {
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: bytesPerSecond,
  });
  return cdp;
}

async function waitDone(page, name, size) {
  const info = await waitRow(page, name, ["done", "error", "cancelled"]);
  if (info.state !== "done") throw new Error(`${name} ended ${info.state}: ${info.status}`);
  if (info.acked !== size) throw new Error(`${name} done with ${info.acked} of ${size} acknowledged`);
  // The completed list shows it with a download link.
  await page.locator(`#files li[data-name="${name}"] a`).waitFor({ timeout: 20000 });
  return info;
}

const scenarios = {
  // Pick a file, let it finish; screenshots of the empty page and the result.
  async upload({ page }) {
    // Every request to the upload API carries the token from ?token=.
    const seen = { requests: 0, withToken: 0 };
    page.on("request", (request) => {
      if (!new URL(request.url()).pathname.startsWith("/uploads")) return;
      seen.requests += 1;
      if (request.headers()["authorization"] === `Bearer ${params.token}`) seen.withToken += 1;
    });
    const address = page.url();
    await shot(page, "empty");
    await page.setInputFiles("#picker", params.file);
    const info = await waitDone(page, params.name, params.size);
    const link = await page.locator(`#files li[data-name="${params.name}"] a`).getAttribute("href");
    await shot(page, "done");
    const tokenField = await page.locator("#token").inputValue();
    return { info, link, auth: seen, address, tokenField };
  },

  // Playwright's offline mode in the middle of an upload, then back.
  async offline({ context, page }) {
    await throttle(context, page, 12 * MIB);
    await page.setInputFiles("#picker", params.file);
    await waitRow(page, params.name, ["uploading"], 8 * MIB);
    await context.setOffline(true);
    log("offline");
    const waiting = await waitRow(page, params.name, ["waiting"], 0, 15000);
    await page.locator("#net:not([hidden])").waitFor({ timeout: 5000 });
    await page.waitForTimeout(params.offlineMs ?? 3000);
    const during = await rowInfo(page, params.name);
    await shot(page, "offline");
    await context.setOffline(false);
    log("online again");
    const info = await waitDone(page, params.name, params.size);
    await shot(page, "recovered");
    return { waiting, during, info };
  },

  // Through the fault proxy (the page is loaded from it): it just finishes.
  async proxy({ page }) {
    await page.setInputFiles("#picker", params.file);
    const seen = new Set();
    const deadline = Date.now() + TIMEOUT;
    let info;
    for (;;) {
      info = await rowInfo(page, params.name).catch(() => null);
      if (info) seen.add(info.state);
      if (info && info.state === "waiting" && !seen.has("shot")) {
        seen.add("shot");
        await shot(page, "retrying");
      }
      if (info && ["done", "error", "cancelled"].includes(info.state)) break;
      if (Date.now() > deadline) throw new Error(`not done within ${TIMEOUT} ms: ${JSON.stringify(info)}`);
      await page.waitForTimeout(50);
    }
    info = await waitDone(page, params.name, params.size);
    await shot(page, "done");
    return { info, states: [...seen] };
  },

  // Reload mid-upload, pick the same file again: it resumes.
  async reload({ context, page }) {
    let cdp = await throttle(context, page, 16 * MIB);
    await page.setInputFiles("#picker", params.file);
    const before = await waitRow(page, params.name, ["uploading"], params.reloadAt ?? 20 * MIB);
    log("reloading at", before.acked);
    page.on("dialog", (dialog) => dialog.accept().catch(() => {}));
    await page.reload({ waitUntil: "load" });
    await cdp.detach().catch(() => {});
    cdp = await throttle(context, page, 16 * MIB);
    const pending = await waitRow(page, params.name, ["needs-file"], 1, 15000);
    await page.waitForFunction(
      (name) => [...document.querySelectorAll("#queue li.upload")].some((li) => li.dataset.name === name && /already on the server/.test(li.textContent)),
      params.name,
      { timeout: 15000 },
    );
    await shot(page, "after-reload");
    await page.setInputFiles("#picker", params.file);
    const resumed = await waitRow(page, params.name, ["uploading", "done"], pending.acked);
    const info = await waitDone(page, params.name, params.size);
    await shot(page, "done");
    return { before, pending, resumed, info };
  },

  // Pause (nothing more is sent), resume, finish; then cancel a second file.
  async controls({ context, page }) {
    await throttle(context, page, 8 * MIB);
    await page.setInputFiles("#picker", params.file);
    await waitRow(page, params.name, ["uploading"], 8 * MIB);
    await page.getByRole("button", { name: `Pause ${params.name}` }).click();
    const paused = await waitRow(page, params.name, ["paused"]);
    await page.waitForTimeout(1500);
    const still = await rowInfo(page, params.name);
    if (still.state !== "paused" || still.acked !== paused.acked) {
      throw new Error(`paused upload moved: ${JSON.stringify(paused)} -> ${JSON.stringify(still)}`);
    }
    await shot(page, "paused");
    await page.getByRole("button", { name: `Resume ${params.name}` }).click();
    const resumed = await waitRow(page, params.name, ["uploading", "done"], paused.acked);
    const info = await waitDone(page, params.name, params.size);

    await page.setInputFiles("#picker", params.file2);
    const started = await waitRow(page, params.name2, ["uploading"], 4 * MIB);
    await shot(page, "second-uploading");
    await page.getByRole("button", { name: `Cancel ${params.name2}` }).click();
    const cancelled = await waitRow(page, params.name2, ["cancelled"], 0, 15000);
    await shot(page, "cancelled");
    const stored = await page.evaluate(() => localStorage.getItem("tenax.uploads.v1"));
    return { paused, still, resumed, info, started, cancelled, cancelledUrl: started.url, stored };
  },

  // Keyboard only: Tab reaches the picker, the token field and the row's
  // buttons; Enter and Space work them. Accessible names are checked.
  async keyboard({ context, page }) {
    const names = {
      picker: await page.getByLabel("Choose files…").count(),
      tokenField: 0,
      uploads: await page.getByRole("list", { name: "Uploads" }).count(),
      files: await page.getByRole("list", { name: "Files on the server" }).count(),
      refresh: await page.getByRole("button", { name: "Refresh" }).count(),
    };
    const focusPath = [];
    const describe = () =>
      page.evaluate(() => {
        const el = document.activeElement;
        if (!el || el === document.body) return "body";
        return `${el.tagName.toLowerCase()}#${el.id}|${el.getAttribute("aria-label") || el.textContent.trim().slice(0, 40)}`;
      });
    let reachedPicker = false;
    for (let i = 0; i < 12 && !reachedPicker; i++) {
      await page.keyboard.press("Tab");
      const now = await describe();
      focusPath.push(now);
      reachedPicker = now.startsWith("input#picker");
    }
    if (!reachedPicker) throw new Error(`Tab never reached the file picker: ${focusPath.join(" → ")}`);
    await shot(page, "picker-focused", { fullPage: false });
    // The token box opens from the keyboard.
    await page.keyboard.press("Tab");
    focusPath.push(await describe());
    await page.keyboard.press("Enter");
    await page.keyboard.press("Tab");
    const tokenFocus = await describe();
    focusPath.push(tokenFocus);
    if (!tokenFocus.startsWith("input#token")) throw new Error(`Tab after the token summary went to ${tokenFocus}`);
    names.tokenField = await page.getByLabel(/^Token/).count();

    await throttle(context, page, 6 * MIB);
    await page.setInputFiles("#picker", params.file);
    await waitRow(page, params.name, ["uploading"], 1);
    // From the token field, Tab moves on to the row's Pause button.
    let reachedPause = false;
    for (let i = 0; i < 10 && !reachedPause; i++) {
      await page.keyboard.press("Tab");
      const now = await describe();
      focusPath.push(now);
      reachedPause = now.includes(`Pause ${params.name}`);
    }
    if (!reachedPause) throw new Error(`Tab never reached the Pause button: ${focusPath.join(" → ")}`);
    await page.keyboard.press("Enter");
    const paused = await waitRow(page, params.name, ["paused"]);
    await page.locator(`#queue li.upload[data-name="${params.name}"] [data-act=resume]`).focus();
    await shot(page, "paused-keyboard", { fullPage: false });
    await page.keyboard.press("Space");
    await waitRow(page, params.name, ["uploading", "done"], paused.acked);
    const progressName = await page.getByRole("progressbar", { name: `Acknowledged by the server: ${params.name}` }).count();
    const liveRegions = await page.locator("[aria-live]").count();
    const info = await waitDone(page, params.name, params.size);
    return { names: { ...names, progressName, liveRegions }, focusPath, paused, info };
  },

  // A phone-sized screen: one finished file, one in progress.
  async phone({ context, page }) {
    await page.setInputFiles("#picker", params.file);
    await waitDone(page, params.name, params.size);
    await throttle(context, page, 4 * MIB);
    await page.setInputFiles("#picker", params.file2);
    await waitRow(page, params.name2, ["uploading"], 4 * MIB);
    await page.waitForTimeout(1200); // a speed and an ETA to show
    await shot(page, "in-progress");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await page.getByRole("button", { name: `Pause ${params.name2}` }).click();
    await waitRow(page, params.name2, ["paused"]);
    await shot(page, "paused");
    return { overflow };
  },
};

async function main() {
  const scenario = scenarios[params.scenario];
  if (!scenario) throw new Error(`unknown scenario ${params.scenario}`);
  const executablePath = params.chromium ?? "/usr/bin/chromium";
  if (!fs.existsSync(executablePath)) {
    throw new Error(`${executablePath} is missing: run scripts/test (it installs Debian's chromium)`);
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "tenax-chromium-"));
  const viewport = params.viewport ?? { width: 1100, height: 900 };
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: FLAGS,
    viewport,
    deviceScaleFactor: params.scale ?? 1,
    isMobile: !!params.mobile,
    hasTouch: !!params.mobile,
    timeout: 60000,
  });
  context.setDefaultTimeout(TIMEOUT);
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const errors = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    page.on("console", (message) => {
      if (message.type() === "error") log("console:", message.text());
    });
    const url = params.base + "/" + (params.query ?? "");
    await page.goto(url, { waitUntil: "load" });
    const result = await scenario({ context, page });
    if (errors.length) throw new Error(`script errors on the page: ${errors.join("; ")}`);
    return result;
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: `driver watchdog: no result within ${TIMEOUT * 3} ms` }));
  process.exit(3);
}, TIMEOUT * 3);

try {
  const result = await main();
  console.log(JSON.stringify({ ok: true, ...result }));
  clearTimeout(watchdog);
  process.exit(0);
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error && error.stack ? error.stack : error) }));
  clearTimeout(watchdog);
  process.exit(1);
}
