/*
 * tenax upload page.
 *
 * Design decisions
 *
 * - Hand-written JS over tus 1.0.0, not the tus-js-client bundle. The server
 *   already speaks tus (POST /uploads -> 201 + Location; HEAD -> Upload-Offset;
 *   PATCH application/offset+octet-stream -> 204 + Upload-Offset; DELETE), and
 *   the client side of that is ~100 lines. A bundle would need a build step
 *   (npm at cargo build time, or a vendored 50 kB blob nobody reviews) and
 *   would hide the three things this page is about: what "acknowledged"
 *   means, when to retry, and how to resume after a reload.
 * - XMLHttpRequest per chunk: fetch() has no upload progress, and without it
 *   there is no speed, ETA or stall detection on a slow link.
 * - Blob.slice chunks of 8 MiB: the file is never in memory, a dropped
 *   connection costs at most one chunk's progress (less: tenax keeps the
 *   prefix of a cut PATCH, and we ask with HEAD before resending), and the
 *   offset the server returns after each chunk is durable (fsynced).
 * - "Acknowledged" is only what the server said it holds (Upload-Offset of a
 *   204 or a HEAD). Bytes in flight count for speed, never for progress.
 * - Survival: a network error or a stall (no progress for STALL_MS) aborts
 *   the chunk; then we probe the server every PROBE_MS (±10%) with the HEAD
 *   that comes before every next PATCH, however long the link is down, so
 *   the upload is back on the wire within about a second of the link's
 *   return (a wait that doubles lands in the next outage of a flapping
 *   link). The server's own trouble (a 5xx, 429 or 408) is different: we
 *   wait as its Retry-After says, else back off (0.5 s doubling to 30 s,
 *   with jitter; back to 0.5 s whenever the server reports progress).
 *   While the browser says it is
 *   offline we wait for its `online` event instead (with a timer as a
 *   fallback, since navigator.onLine can be wrong). Network errors retry
 *   forever: giving up is the user's call (Pause / Cancel).
 * - Reload / browser restart: the upload URL is kept in localStorage under a
 *   fingerprint of the file: name, size, lastModified and a hash of its first
 *   and last 64 KiB. After a reload the page lists those uploads; picking the
 *   same file again finds the entry, asks the server (HEAD) what it holds and
 *   continues from there. The hash is a small 64-bit JS hash (two FNV-style
 *   32-bit lanes), not crypto.subtle, which only exists in secure contexts
 *   and a tenax server on a LAN address is plain http://. It tells files
 *   apart; it is no security boundary (the server's SHA-256 is).
 * - Auth: a token field (or ?token= in the page address, then removed from
 *   the address bar) sends `Authorization: Bearer …` on every request. The
 *   token is kept for the tab's session only (sessionStorage).
 */
(() => {
  "use strict";

  const CHUNK = 8 * 1024 * 1024;
  const EDGE = 64 * 1024;
  const STALL_MS = 20000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const PROBE_MS = 1000;
  const PARALLEL = 2;
  const STORE_KEY = "tenax.uploads.v1";
  const TOKEN_KEY = "tenax.token";
  const ENDPOINT = "/uploads";

  const $ = (id) => document.getElementById(id);
  const queueEl = $("queue");
  const filesEl = $("files");
  const live = $("live");
  const alertEl = $("alert");
  const tokenInput = $("token");
  const netEl = $("net");

  /* ---------- small helpers ---------- */

  function formatBytes(n) {
    if (!Number.isFinite(n)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + units[i];
  }

  function formatDuration(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) return "";
    seconds = Math.round(seconds);
    if (seconds < 60) return seconds + " s";
    const m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + " min " + String(s).padStart(2, "0") + " s";
    const h = Math.floor(m / 60);
    return h + " h " + String(m % 60).padStart(2, "0") + " min";
  }

  function say(text) {
    // Re-set so that a repeated message is announced again.
    live.textContent = "";
    setTimeout(() => { live.textContent = text; }, 50);
  }

  function shout(text) {
    alertEl.textContent = "";
    setTimeout(() => { alertEl.textContent = text; }, 50);
  }

  function base64(text) {
    const bytes = new TextEncoder().encode(text);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary);
  }

  /* ---------- token ---------- */

  function initToken() {
    const params = new URLSearchParams(location.search);
    const fromUrl = params.get("token");
    if (fromUrl) {
      sessionStorage.setItem(TOKEN_KEY, fromUrl);
      params.delete("token");
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    }
    tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
    if (tokenInput.value) $("token-box").open = true;
    tokenInput.addEventListener("input", () => {
      if (tokenInput.value) sessionStorage.setItem(TOKEN_KEY, tokenInput.value);
      else sessionStorage.removeItem(TOKEN_KEY);
    });
  }

  function headers(extra) {
    const h = Object.assign({ "Tus-Resumable": "1.0.0" }, extra || {});
    const token = tokenInput.value.trim();
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  /* ---------- HTTP: one XHR per request ---------- */

  // `retry`: worth retrying. `server`: the server's trouble (a status),
  // not the link's; then `retryAfter` is its Retry-After in ms, if any.
  class NetError extends Error {
    constructor(message, retry) { super(message); this.retry = retry; this.server = false; this.retryAfter = null; }
  }

  // A retryable error for the server's answer `xhr` (5xx, 429, 408).
  function serverTrouble(xhr) {
    const error = new NetError("the server answered " + xhr.status, true);
    error.server = true;
    const value = (xhr.getResponseHeader("Retry-After") || "").trim();
    if (/^[0-9]+$/.test(value)) error.retryAfter = Number(value) * 1000;
    else if (value) {
      const when = Date.parse(value);
      if (!Number.isNaN(when)) error.retryAfter = Math.max(0, when - Date.now());
    }
    return error;
  }

  // `ms` ± `share`, at random.
  function jitter(ms, share) {
    return Math.round(ms * (1 - share + Math.random() * 2 * share));
  }

  // Resolves with the XHR once it has a response (any status); rejects with
  // a NetError (retry = true) on a network error, a timeout or a stall, and
  // with retry = false when aborted through `signal`.
  function request(method, url, { body, extra, signal, onProgress } = {}) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, url);
      const h = headers(extra);
      for (const k in h) xhr.setRequestHeader(k, h[k]);
      let stallTimer = null;
      const armStall = () => {
        clearTimeout(stallTimer);
        stallTimer = setTimeout(() => { stalled = true; xhr.abort(); }, STALL_MS);
      };
      let stalled = false;
      const finish = () => { clearTimeout(stallTimer); signal && signal.removeEventListener("abort", onAbort); };
      const onAbort = () => xhr.abort();
      xhr.upload.onprogress = (e) => { armStall(); onProgress && onProgress(e.loaded); };
      xhr.onprogress = armStall;
      xhr.onload = () => { finish(); resolve(xhr); };
      xhr.onerror = () => { finish(); reject(new NetError("the connection failed", true)); };
      xhr.ontimeout = () => { finish(); reject(new NetError("the request timed out", true)); };
      xhr.onabort = () => {
        finish();
        if (stalled) reject(new NetError("no progress for " + STALL_MS / 1000 + " s", true));
        else reject(new NetError("aborted", false));
      };
      if (signal) {
        if (signal.aborted) { finish(); reject(new NetError("aborted", false)); return; }
        signal.addEventListener("abort", onAbort, { once: true });
      }
      armStall();
      xhr.send(body === undefined ? null : body);
    });
  }

  // The plain-words reason of a refused request: the problem+json detail if any.
  function refusal(xhr) {
    let detail = "";
    try {
      const problem = JSON.parse(xhr.responseText || "{}");
      detail = problem.detail || problem.title || "";
    } catch (_) { /* not JSON */ }
    const what = {
      401: "The server wants an access token (open “Access token” above).",
      403: "The server refused this access token.",
      404: "The server no longer has this upload.",
      410: "The server no longer has this upload.",
      413: "The file is larger than the server accepts.",
    }[xhr.status] || "The server refused the upload (HTTP " + xhr.status + ").";
    return detail && !what.includes(detail) ? what + " " + detail : what;
  }

  /* ---------- fingerprints and the resume store ---------- */

  function hash64(bytes) {
    let a = 0x811c9dc5, b = 0x01000193 ^ bytes.length;
    for (let i = 0; i < bytes.length; i++) {
      a = Math.imul(a ^ bytes[i], 0x01000193);
      b = Math.imul(b ^ bytes[i], 0x5bd1e995);
      b ^= b >>> 15;
    }
    return (a >>> 0).toString(16).padStart(8, "0") + (b >>> 0).toString(16).padStart(8, "0");
  }

  async function fingerprint(file) {
    const head = new Uint8Array(await file.slice(0, EDGE).arrayBuffer());
    const tail = new Uint8Array(await file.slice(Math.max(0, file.size - EDGE)).arrayBuffer());
    return ["tenax1", file.name, file.size, file.lastModified, hash64(head) + hash64(tail)].join("|");
  }

  function loadStore() {
    try { return JSON.parse(localStorage.getItem(STORE_KEY) || "{}") || {}; }
    catch (_) { return {}; }
  }
  function saveEntry(fp, entry) {
    const store = loadStore();
    if (entry) store[fp] = entry; else delete store[fp];
    try { localStorage.setItem(STORE_KEY, JSON.stringify(store)); } catch (_) { /* full or disabled */ }
  }

  /* ---------- one upload ---------- */

  const items = new Map(); // fingerprint -> Item
  let running = 0;

  class Item {
    constructor(fp, name, size) {
      this.fp = fp;
      this.name = name;
      this.size = size;
      this.file = null;
      this.url = null;
      this.acked = 0;
      this.inflight = 0;
      this.state = "queued";
      this.message = "";
      this.controller = null;
      this.samples = [];
      this.attempt = 0;
      this.lastSaid = -1;
      this.el = document.importNode($("row").content, true).firstElementChild;
      this.el.querySelector(".name").textContent = name;
      this.el.querySelector(".name").title = name;
      this.el.dataset.name = name;
      const bar = this.el.querySelector(".bar");
      bar.setAttribute("aria-label", "Acknowledged by the server: " + name);
      for (const button of this.el.querySelectorAll("button")) {
        button.setAttribute("aria-label", button.textContent + " " + name);
        button.addEventListener("click", () => this.act(button.dataset.act));
      }
      queueEl.prepend(this.el);
      $("queue-empty").hidden = true;
    }

    set(state, message) {
      const was = this.state;
      this.state = state;
      this.message = message || "";
      if (was !== state) {
        const spoken = { paused: "paused", done: "uploaded", cancelled: "cancelled", waiting: "waiting for the network", uploading: "uploading" }[state];
        if (state === "error") shout(this.name + ": " + this.message);
        else if (spoken && !(was === "waiting" && state === "uploading" && this.attempt > 0)) say(this.name + ": " + spoken);
      }
      this.render();
    }

    speed() {
      const now = performance.now();
      this.samples = this.samples.filter((s) => now - s.t < 6000);
      if (this.samples.length < 2) return 0;
      const first = this.samples[0], last = this.samples[this.samples.length - 1];
      const dt = (last.t - first.t) / 1000;
      return dt > 0.5 ? (last.bytes - first.bytes) / dt : 0;
    }

    sample() {
      this.samples.push({ t: performance.now(), bytes: this.acked + this.inflight });
    }

    render() {
      const el = this.el;
      el.dataset.state = this.state;
      el.dataset.acked = String(this.acked);
      const pct = this.size > 0 ? Math.floor((this.acked / this.size) * 1000) / 10 : (this.state === "done" ? 100 : 0);
      const bar = el.querySelector(".bar");
      bar.value = pct;
      bar.setAttribute("aria-valuetext", formatBytes(this.acked) + " of " + formatBytes(this.size) + " acknowledged");
      el.querySelector(".meta").textContent = formatBytes(this.size);
      const speed = this.speed();
      let status = "", numbers = formatBytes(this.acked) + " of " + formatBytes(this.size) + " acknowledged";
      switch (this.state) {
        case "queued": status = "Waiting to start"; break;
        case "checking": status = "Asking the server what it holds…"; break;
        case "uploading": {
          status = "Uploading · " + pct.toFixed(1) + "%";
          if (speed > 0) {
            numbers += " · " + formatBytes(speed) + "/s";
            const eta = (this.size - this.acked - this.inflight) / speed;
            if (eta > 0) numbers += " · " + formatDuration(eta) + " left";
          }
          break;
        }
        case "waiting": status = this.message || "Waiting for the network…"; break;
        case "paused": status = "Paused · the server keeps what it has"; break;
        case "done": status = "Uploaded"; numbers = formatBytes(this.size) + " · checked by the server"; break;
        case "cancelled": status = "Cancelled · removed from the server"; numbers = ""; break;
        case "error": status = this.message; break;
        case "needs-file": status = "Pick this file again to resume"; numbers = this.message || numbers; break;
      }
      el.querySelector(".status").textContent = status;
      el.querySelector(".numbers").textContent = numbers;
      const show = {
        pause: ["queued", "checking", "uploading", "waiting"].includes(this.state),
        resume: ["paused", "error"].includes(this.state) && !!this.file,
        cancel: !["done", "cancelled"].includes(this.state),
        dismiss: ["done", "cancelled"].includes(this.state),
      };
      for (const button of el.querySelectorAll("button")) button.hidden = !show[button.dataset.act];
      const resume = el.querySelector('[data-act="resume"]');
      resume.textContent = this.state === "error" ? "Retry" : "Resume";
      resume.setAttribute("aria-label", resume.textContent + " " + this.name);
      if (this.state === "uploading" && this.size > 0) {
        const quarter = Math.floor((this.acked / this.size) * 4);
        if (quarter > this.lastSaid && quarter > 0 && quarter < 4) {
          this.lastSaid = quarter;
          say(this.name + ": " + quarter * 25 + "% acknowledged");
        }
      }
    }

    act(what) {
      if (what === "pause") this.pause();
      else if (what === "resume") this.resume();
      else if (what === "cancel") this.cancel();
      else if (what === "dismiss") this.dismiss();
    }

    stop() {
      if (this.controller) this.controller.abort();
      this.controller = null;
    }

    pause() {
      this.stop();
      this.inflight = 0;
      this.set("paused");
    }

    resume() {
      if (!this.file) return;
      this.attempt = 0;
      this.set("queued");
      pump();
    }

    async cancel() {
      this.stop();
      const url = this.url;
      saveEntry(this.fp, null);
      this.inflight = 0;
      if (url) {
        try {
          const xhr = await request("DELETE", url);
          if (xhr.status >= 400 && xhr.status !== 404 && xhr.status !== 410) {
            this.set("error", "Cancelled here, but the server refused to delete it: " + refusal(xhr));
            return;
          }
        } catch (_) {
          this.set("error", "Cancelled here, but the server could not be reached to delete it.");
          return;
        }
      }
      this.file = null;
      this.set("cancelled");
    }

    dismiss() {
      items.delete(this.fp);
      this.el.remove();
      $("queue-empty").hidden = items.size > 0;
    }

    // Runs the upload until done, paused, cancelled or refused.
    async run() {
      const controller = new AbortController();
      this.controller = controller;
      const signal = controller.signal;
      let backoff = BACKOFF_MIN_MS;
      let sync = true; // ask the server before the next PATCH
      let resyncs = 0; // immediate HEADs after a 409, reset by progress
      while (!signal.aborted) {
        try {
          if (!this.url) {
            await this.create(signal);
            sync = false;
          }
          if (sync) {
            this.set("checking");
            const before = this.acked;
            if (!(await this.head(signal))) continue; // the upload was gone: create anew
            sync = false;
            if (this.acked > before) {
              backoff = BACKOFF_MIN_MS;
              resyncs = 0;
            }
          }
          if (this.acked >= this.size) {
            this.finish();
            return;
          }
          this.set("uploading");
          await this.patch(signal);
          backoff = BACKOFF_MIN_MS;
          resyncs = 0;
          this.attempt = 0;
        } catch (error) {
          if (signal.aborted || !(error instanceof NetError)) {
            if (!signal.aborted) this.set("error", String(error.message || error));
            return;
          }
          if (!error.retry) {
            this.set("error", error.message);
            return;
          }
          this.inflight = 0;
          sync = true;
          if (error.resync && resyncs++ < 3) continue; // HEAD at once
          this.attempt++;
          if (!navigator.onLine) {
            this.set("waiting", "Offline · resumes when the network is back");
            await waitOnline(signal, BACKOFF_MAX_MS);
          } else if (error.server) {
            const wait = error.retryAfter != null ? error.retryAfter : jitter(backoff, 0.25);
            this.set("waiting", "Server busy (" + error.message + ") · retrying in " + Math.ceil(wait / 1000) + " s");
            await waitOnline(signal, wait);
            backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
          } else {
            // The link: probe steadily, never longer apart than PROBE_MS.
            const wait = jitter(PROBE_MS, 0.1);
            this.set("waiting", "Connection lost (" + error.message + ") · trying again every second");
            await waitOnline(signal, wait);
          }
        }
      }
    }

    async create(signal) {
      this.set("checking");
      const xhr = await request("POST", ENDPOINT, {
        signal,
        extra: {
          "Upload-Length": String(this.size),
          "Upload-Metadata": "filename " + base64(this.name) + (this.file && this.file.type ? ",filetype " + base64(this.file.type) : ""),
        },
      });
      if (xhr.status >= 500 || xhr.status === 429 || xhr.status === 408) throw serverTrouble(xhr);
      const location = xhr.getResponseHeader("Location");
      if (xhr.status !== 201 || !location) throw new Error(refusal(xhr));
      this.url = new URL(location, window.location.href).href;
      this.el.dataset.url = this.url;
      this.acked = 0;
      saveEntry(this.fp, { url: this.url, name: this.name, size: this.size, created: Date.now() });
    }

    // The offset the server holds; false when the upload is gone (the
    // stored URL is forgotten and a new upload is created).
    async head(signal) {
      const xhr = await request("HEAD", this.url, { signal });
      if (xhr.status === 404 || xhr.status === 410) {
        this.url = null;
        this.acked = 0;
        saveEntry(this.fp, null);
        return false;
      }
      if (xhr.status >= 500 || xhr.status === 429 || xhr.status === 408) throw serverTrouble(xhr);
      if (xhr.status >= 400) throw new Error(refusal(xhr));
      const offset = Number(xhr.getResponseHeader("Upload-Offset"));
      const length = xhr.getResponseHeader("Upload-Length");
      if (!Number.isSafeInteger(offset) || offset < 0 || (length !== null && Number(length) !== this.size)) {
        this.url = null;
        saveEntry(this.fp, null);
        return false;
      }
      this.acked = offset;
      this.render();
      return true;
    }

    async patch(signal) {
      const start = this.acked;
      const end = Math.min(this.size, start + CHUNK);
      this.inflight = 0;
      this.sample();
      const xhr = await request("PATCH", this.url, {
        signal,
        body: this.file.slice(start, end),
        extra: { "Content-Type": "application/offset+octet-stream", "Upload-Offset": String(start) },
        onProgress: (loaded) => {
          this.inflight = loaded;
          this.sample();
          this.render();
        },
      });
      this.inflight = 0;
      if (xhr.status === 204 || xhr.status === 200) {
        const offset = Number(xhr.getResponseHeader("Upload-Offset"));
        if (!Number.isSafeInteger(offset) || offset < start) {
          const odd = new NetError("odd answer from the server", true);
          odd.server = true;
          throw odd;
        }
        this.acked = offset;
        this.sample();
        this.render();
        return;
      }
      if (xhr.status === 409 || xhr.status === 404 || xhr.status === 410) {
        // Typically Chromium silently re-sent a chunk after a dropped
        // connection: ask the server where it stands, without backing off.
        const error = new NetError("the server holds a different offset", true);
        error.resync = true;
        throw error;
      }
      if (xhr.status >= 500 || xhr.status === 408 || xhr.status === 429) {
        throw serverTrouble(xhr);
      }
      throw new Error(refusal(xhr));
    }

    finish() {
      this.inflight = 0;
      saveEntry(this.fp, null);
      this.file = null;
      this.controller = null;
      this.el.dataset.url = this.url || "";
      this.set("done");
      refreshFiles();
    }
  }

  // Resolves after `maxMs`, at the browser's `online` event, or on abort,
  // whichever comes first.
  function waitOnline(signal, maxMs) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, maxMs);
      function done() {
        clearTimeout(timer);
        window.removeEventListener("online", done);
        signal.removeEventListener("abort", done);
        resolve();
      }
      window.addEventListener("online", done);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  // Starts queued uploads, PARALLEL at a time.
  function pump() {
    for (const item of items.values()) {
      if (running >= PARALLEL) return;
      if (item.state !== "queued" || !item.file) continue;
      running++;
      item.run().finally(() => { running--; pump(); });
    }
  }

  /* ---------- picking files ---------- */

  async function add(files) {
    for (const file of files) {
      let fp;
      try { fp = await fingerprint(file); }
      catch (_) { shout(file.name + ": the browser could not read this file."); continue; }
      let item = items.get(fp);
      if (item && item.file && !["done", "cancelled"].includes(item.state)) {
        say(file.name + " is already in the list.");
        continue;
      }
      if (item) item.dismiss();
      item = new Item(fp, file.name, file.size);
      items.set(fp, item);
      item.file = file;
      const stored = loadStore()[fp];
      if (stored && stored.url) {
        item.url = stored.url; // run() asks the server (HEAD) before sending
        item.el.dataset.url = stored.url;
        say(file.name + ": resuming an earlier upload");
      }
      item.render();
    }
    pump();
  }

  // After a reload: the uploads this browser started and did not finish.
  async function restore() {
    const store = loadStore();
    for (const fp of Object.keys(store)) {
      const entry = store[fp];
      if (!entry || !entry.url || items.has(fp)) continue;
      const item = new Item(fp, String(entry.name), Number(entry.size) || 0);
      item.url = entry.url;
      item.el.dataset.url = entry.url;
      items.set(fp, item);
      item.set("needs-file", "Checking the server…");
      try {
        const xhr = await request("HEAD", entry.url);
        if (item.file) continue; // picked meanwhile
        if (xhr.status === 404 || xhr.status === 410) { saveEntry(fp, null); item.dismiss(); continue; }
        const offset = Number(xhr.getResponseHeader("Upload-Offset"));
        if (Number.isSafeInteger(offset)) {
          item.acked = offset;
          item.set("needs-file", formatBytes(offset) + " of " + formatBytes(item.size) + " already on the server");
        } else {
          item.set("needs-file", "");
        }
      } catch (_) {
        if (!item.file) item.set("needs-file", "The server could not be reached; it will be asked when you pick the file.");
      }
    }
  }

  /* ---------- completed files ---------- */

  async function refreshFiles() {
    const errorEl = $("files-error");
    let list;
    try {
      const xhr = await request("GET", "/api/files", { extra: { Accept: "application/json" } });
      if (xhr.status !== 200) throw new Error(refusal(xhr));
      list = JSON.parse(xhr.responseText);
      errorEl.hidden = true;
    } catch (error) {
      errorEl.textContent = "Could not load the list of files: " + (error.message || error);
      errorEl.hidden = false;
      return;
    }
    list.sort((a, b) => b.completed_at - a.completed_at || a.name.localeCompare(b.name));
    filesEl.replaceChildren(...list.map((file) => {
      const li = document.createElement("li");
      li.dataset.name = file.name;
      const name = document.createElement("span");
      name.className = "fname";
      name.textContent = file.name;
      name.title = file.name;
      const info = document.createElement("span");
      info.className = "finfo";
      const when = new Date(file.completed_at * 1000);
      info.append(formatBytes(file.size) + " · " + when.toLocaleString() + " · SHA-256 ");
      const digest = document.createElement("code");
      digest.textContent = file.sha256.slice(0, 12) + "…";
      digest.title = file.sha256;
      info.append(digest);
      const link = document.createElement("a");
      link.className = "button small";
      link.href = file.url;
      link.download = file.name;
      link.textContent = "Download";
      link.setAttribute("aria-label", "Download " + file.name);
      li.append(name, info, link);
      return li;
    }));
    $("files-empty").hidden = list.length > 0;
  }

  /* ---------- wiring ---------- */

  function network() {
    netEl.hidden = navigator.onLine;
    netEl.textContent = navigator.onLine ? "" : "You are offline. Uploads wait and continue by themselves when the connection is back.";
  }

  function init() {
    initToken();
    const picker = $("picker");
    picker.addEventListener("change", () => {
      const files = Array.from(picker.files || []);
      picker.value = "";
      add(files);
    });
    const drop = $("drop");
    let depth = 0;
    drop.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; drop.classList.add("over"); });
    drop.addEventListener("dragover", (e) => { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; });
    drop.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; drop.classList.remove("over"); } });
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      depth = 0;
      drop.classList.remove("over");
      add(Array.from((e.dataTransfer && e.dataTransfer.files) || []));
    });
    // A file dropped next to the zone should not navigate away.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
    window.addEventListener("online", () => { network(); say("Back online."); });
    window.addEventListener("offline", () => { network(); say("Offline. Uploads will continue when the connection is back."); });
    window.addEventListener("beforeunload", (e) => {
      for (const item of items.values()) {
        if (["uploading", "checking", "waiting"].includes(item.state)) { e.preventDefault(); return; }
      }
    });
    $("refresh").addEventListener("click", refreshFiles);
    setInterval(() => {
      for (const item of items.values()) if (item.state === "uploading") item.render();
    }, 1000);
    network();
    restore();
    refreshFiles();
  }

  init();
})();
