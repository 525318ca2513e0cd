// Uppy 6 (@uppy/core + @uppy/tus, bundled with esbuild) in headless
// Chromium (Debian's /usr/bin/chromium, through playwright-core) against
// tenax from a second origin, for crates/cli/tests/uppy_browser.rs.
//
// The page is served by this script from its own port (so every request to
// tenax is cross-origin: CORS preflights, exposed headers). The upload is
// paced (each PATCH waits `delayMs` before it is sent) so that the page can
// be reloaded mid-upload; after the reload, Uppy finds the upload URL its
// tus plugin stored in localStorage and resumes.
//
// Usage: node uppy_driver.mjs '{"tenax": "http://127.0.0.1:PORT", "file": PATH, …}'
// Prints one JSON line on stdout at the end: {"ok": true, …} or
// {"ok": false, "error": "…"}; progress goes to stderr. Every wait is
// bounded (`timeout`, ms).

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const params = JSON.parse(process.argv[2] ?? "{}");
const TIMEOUT = params.timeout ?? 120000;
const log = (...args) => console.error(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
const fail = (error) => {
  console.log(JSON.stringify({ ok: false, error: String(error?.stack ?? error) }));
  process.exit(1);
};

// ESM imports ignore NODE_PATH: resolve the CommonJS way.
const require = createRequire(import.meta.url);
let chromium, esbuild;
try {
  const playwright = await import(pathToFileURL(require.resolve("playwright-core")).href);
  chromium = playwright.chromium ?? playwright.default?.chromium;
  esbuild = require("esbuild");
} catch (error) {
  fail(`cannot load playwright-core or esbuild (run scripts/test to install the peers; NODE_PATH=${process.env.NODE_PATH}): ${error}`);
}

const here = path.dirname(fileURLToPath(import.meta.url));
const bundle = await esbuild.build({
  entryPoints: [path.join(here, "uppy_entry.mjs")],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "chrome110",
  write: false,
  nodePaths: (process.env.NODE_PATH ?? "").split(path.delimiter).filter(Boolean),
  logLevel: "error",
});
const script = bundle.outputFiles[0].contents;
log(`bundled Uppy: ${script.length} bytes`);

const PAGE = `<!doctype html><meta charset="utf-8"><title>Uppy against tenax</title>
<script src="/uppy.js"></script>
<script>
window.startUpload = async ({ endpoint, name, chunkSize, delayMs }) => {
  const blob = await (await fetch("/file.bin")).blob();
  // A fixed lastModified: the same file (and so the same Uppy file id and
  // tus fingerprint) after a reload, as a file picked again would be.
  const file = new File([blob], name, { type: "application/octet-stream", lastModified: 1700000000000 });
  const state = (window.uploadState = { requests: [], responses: [], progress: 0, done: null, error: null });
  const uppy = new window.Uppy({ autoProceed: false });
  uppy.use(window.UppyTus, {
    endpoint,
    chunkSize,
    retryDelays: [0, 500, 1000, 2000],
    onBeforeRequest: async (req) => {
      state.requests.push({ method: req.getMethod(), url: req.getURL(), offset: req.getHeader("Upload-Offset") ?? null });
      if (req.getMethod() === "PATCH") await new Promise((resolve) => setTimeout(resolve, delayMs));
    },
    onAfterResponse: (req, res) => {
      state.responses.push({
        method: req.getMethod(),
        status: res.getStatus(),
        location: res.getHeader("Location") ?? null,
        offset: res.getHeader("Upload-Offset") ?? null,
      });
    },
  });
  uppy.on("upload-progress", (_file, progress) => { state.progress = progress.bytesUploaded; });
  uppy.on("upload-success", (_file, response) => { state.done = { uploadURL: response.uploadURL }; });
  uppy.on("upload-error", (_file, error) => { state.error = String(error); });
  uppy.addFile({ name, type: "application/octet-stream", data: file, source: "test" });
  uppy.upload().catch((error) => { state.error = String(error); });
};
</script>
<p>Uppy test page</p>`;

const server = http.createServer((req, res) => {
  if (req.url === "/") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(PAGE);
  } else if (req.url === "/uppy.js") {
    res.writeHead(200, { "content-type": "text/javascript" });
    res.end(script);
  } else if (req.url === "/file.bin") {
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": fs.statSync(params.file).size });
    fs.createReadStream(params.file).pipe(res);
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const pageOrigin = `http://127.0.0.1:${server.address().port}`;
log(`page at ${pageOrigin}, tenax at ${params.tenax}`);

const browser = await chromium.launch({
  executablePath: params.chromium,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-quic"],
  timeout: TIMEOUT,
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (message) => log("page:", message.text()));
  const options = {
    endpoint: `${params.tenax}/uploads`,
    name: params.name,
    chunkSize: params.chunkSize,
    delayMs: params.delayMs,
  };
  const state = () => page.evaluate(() => window.uploadState);

  // 1. Start, and reload once the server has acknowledged `reloadAfter` bytes.
  await page.goto(pageOrigin);
  await page.evaluate((options) => window.startUpload(options), options);
  await page.waitForFunction(
    (threshold) => {
      const s = window.uploadState;
      if (s.error || s.done) return true;
      return s.responses.some((r) => r.method === "PATCH" && Number(r.offset) >= threshold);
    },
    params.reloadAfter,
    { timeout: TIMEOUT, polling: 10 },
  );
  const before = await state();
  if (before.error) throw new Error(`upload failed before the reload: ${before.error}`);
  if (before.done) throw new Error("the upload finished before the reload: pace it more");
  const stored = await page.evaluate(() =>
    Object.keys(localStorage).filter((key) => key.startsWith("tus::")).map((key) => [key, localStorage.getItem(key)]),
  );
  const acked = Math.max(...before.responses.filter((r) => r.method === "PATCH").map((r) => Number(r.offset)));
  log(`reloading at ${acked} bytes acknowledged; localStorage: ${JSON.stringify(stored)}`);
  await page.reload();

  // 2. The same file again: Uppy finds the stored URL and resumes.
  await page.evaluate((options) => window.startUpload(options), options);
  await page.waitForFunction(() => window.uploadState.done || window.uploadState.error, null, {
    timeout: TIMEOUT,
    polling: 20,
  });
  const after = await state();
  if (after.error) throw new Error(`upload failed after the reload: ${after.error}`);
  console.log(JSON.stringify({
    ok: true,
    pageOrigin,
    stored,
    before: { acked, requests: before.requests, responses: before.responses },
    after: { requests: after.requests, responses: after.responses, uploadURL: after.done.uploadURL },
  }));
} catch (error) {
  fail(error);
} finally {
  await browser.close().catch(() => {});
  server.close();
}
