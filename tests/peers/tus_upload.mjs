// Drives the official tus client, tus-js-client (Node build), against a
// tenax server. Used by crates/cli/tests/tus_js_client.rs; the package comes
// from target/peers/node/node_modules (installed by scripts/test from
// tests/peers/package.json and package-lock.json), found through NODE_PATH:
//   NODE_PATH=target/peers/node/node_modules node tests/peers/tus_upload.mjs ...
// (ESM imports ignore NODE_PATH, so the package is resolved the CommonJS way
// and then imported: the same module `import * as tus from 'tus-js-client'`
// loads in an application.)
//
// Usage: node tus_upload.mjs '{"endpoint": "http://127.0.0.1:PORT/uploads",
//                              "file": "/path/to/source", "name": "NAME",
//                              "mode": "plain"}'
// Optional keys: "chunkSize" (bytes; "Infinity" for one PATCH), "retries"
// (number of retry delays in the cut mode), "input": "buffer" (deferred mode),
// "options" (more tus.Upload options, merged last).
//
// Modes: plain, resume, cut, parallel, creation-with-upload, deferred,
// terminate, ietf-03, ietf-05 (see the test file for what each one checks).
//
// Prints exactly one JSON line on stdout: {"ok": true, "url": ..., ...} on
// success, {"ok": false, "error": ...} on failure (then the exit code is 1).
// A trace of every request and response goes to stderr, each line led by
// the seconds since the start.

import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import { PassThrough } from 'node:stream'
import { pathToFileURL } from 'node:url'

let tus
try {
  const entry = createRequire(import.meta.url).resolve('tus-js-client')
  tus = await import(pathToFileURL(entry).href)
} catch (err) {
  process.stdout.write(
    `${JSON.stringify({ ok: false, error: `cannot load tus-js-client (run scripts/test to install the peers; NODE_PATH=${process.env.NODE_PATH}): ${err}` })}\n`,
  )
  process.exit(2)
}

const MiB = 1024 * 1024

/** Set once the JSON line is printed. */
let reported = false

const params = JSON.parse(process.argv[2] ?? '{}')
for (const key of ['endpoint', 'file', 'name', 'mode']) {
  if (typeof params[key] !== 'string' || params[key] === '') {
    fail(`missing parameter "${key}" in ${process.argv[2]}`)
  }
}
const { endpoint, file, name, mode } = params
const size = fs.statSync(file).size
const chunkSize =
  params.chunkSize === 'Infinity'
    ? Number.POSITIVE_INFINITY
    : Number(params.chunkSize ?? MiB)

/** Every exchange, in order: {run, method, url, status, offset, ...}. */
const trace = []
// Seconds since the driver started, for the stderr trace.
const clock = () => (performance.now() / 1000).toFixed(3)
let run = 1

function fail(message) {
  reported = true
  process.stdout.write(`${JSON.stringify({ ok: false, error: String(message), trace })}\n`)
  process.exit(1)
}

function describeError(err) {
  if (err == null) return 'unknown error'
  let text = err.message ?? String(err)
  const res = err.originalResponse
  if (res) {
    const headers = res.getUnderlyingObject()?.headers ?? {}
    text += `\nresponse headers: ${JSON.stringify(headers)}`
  }
  return text
}

/** An in-memory URL storage, so that findPreviousUploads() works in Node. */
class MemoryUrlStorage {
  constructor() {
    this.entries = new Map()
    this.next = 0
  }
  listAllUploads() {
    return Promise.resolve([...this.entries.values()])
  }
  findUploadsByFingerprint(fingerprint) {
    return Promise.resolve(
      [...this.entries.values()].filter((entry) => entry.fingerprint === fingerprint),
    )
  }
  removeUpload(key) {
    this.entries.delete(key)
    return Promise.resolve()
  }
  addUpload(fingerprint, upload) {
    const key = `tus::${fingerprint}::${this.next++}`
    this.entries.set(key, { ...upload, fingerprint, urlStorageKey: key })
    return Promise.resolve(key)
  }
}

const interesting = [
  'upload-offset',
  'upload-length',
  'upload-defer-length',
  'upload-complete',
  'upload-concat',
  'upload-metadata',
  'upload-draft-interop-version',
  'content-type',
  'content-length',
  'location',
  'tus-resumable',
]

function pick(get) {
  const out = {}
  for (const header of interesting) {
    const value = get(header)
    if (value != null) out[header] = value
  }
  return out
}

/** Options shared by every mode: tracing hooks and the metadata. */
function baseOptions(extra = {}) {
  return {
    endpoint,
    chunkSize,
    uploadSize: extra.uploadLengthDeferred ? undefined : size,
    metadata: { filename: name, filetype: 'application/octet-stream' },
    retryDelays: [0, 1000, 3000, 5000],
    onBeforeRequest(req) {
      const entry = {
        run,
        method: req.getMethod(),
        url: req.getURL(),
        request: pick((h) => {
          const key = Object.keys(req._headers ?? {}).find((k) => k.toLowerCase() === h)
          return key === undefined ? undefined : req.getHeader(key)
        }),
      }
      req._traceEntry = entry
      trace.push(entry)
      process.stderr.write(`${clock()} -> [${run}] ${entry.method} ${entry.url} ${JSON.stringify(entry.request)}\n`)
    },
    onAfterResponse(req, res) {
      const entry = req._traceEntry ?? { run, method: req.getMethod(), url: req.getURL() }
      entry.status = res.getStatus()
      entry.response = pick((h) => res.getHeader(h))
      process.stderr.write(
        `${clock()} <- [${entry.run}] ${entry.method} ${entry.url} ${entry.status} ${JSON.stringify(entry.response)}\n`,
      )
    },
    ...extra,
    // Extra tus.Upload options from the parameters (JSON values only).
    ...(params.options ?? {}),
  }
}

/**
 * Runs one tus.Upload to success or failure. `hooks.setup(upload, stop)` may
 * arrange an abort; `stop(value)` resolves the promise early.
 */
function runUpload(input, options, hooks = {}) {
  return new Promise((resolve, reject) => {
    let settled = false
    const stop = (value) => {
      if (!settled) {
        settled = true
        resolve(value)
      }
    }
    const upload = new tus.Upload(input, {
      ...options,
      onSuccess() {
        stop({ upload, finished: true })
      },
      onError(err) {
        if (!settled) {
          settled = true
          reject(err)
        }
      },
      onProgress(sent, total) {
        hooks.onProgress?.(upload, stop, sent, total)
      },
      onChunkComplete(chunk, accepted, total) {
        hooks.onChunkComplete?.(upload, stop, chunk, accepted, total)
      },
    })
    Promise.resolve(hooks.before?.(upload))
      .then(() => upload.start())
      .catch(reject)
  })
}

function count(method, fromRun) {
  return trace.filter((e) => e.method === method && (fromRun == null || e.run === fromRun)).length
}

async function plain(extra = {}) {
  const { upload } = await runUpload(fs.createReadStream(file), baseOptions(extra))
  return { url: upload.url, offset: upload._offset }
}

async function resume() {
  const urlStorage = new MemoryUrlStorage()
  const options = baseOptions({ urlStorage })
  // First run: abort in the middle of a PATCH once 40 % of the bytes were
  // handed to it (progress on a chunk boundary is not mid-request).
  let abortedAt = null
  const first = await runUpload(fs.createReadStream(file), options, {
    onProgress(upload, stop, sent) {
      if (abortedAt == null && sent >= size * 0.4 && sent % chunkSize !== 0) {
        abortedAt = sent
        upload.abort().then(() => stop({ upload, finished: false }))
      }
    },
  })
  if (first.finished) throw new Error('the first run finished before it could be aborted')
  const firstUrl = first.upload.url
  // Second run: a new tus.Upload for the same file finds the stored URL.
  run = 2
  let previous = []
  const second = await runUpload(fs.createReadStream(file), options, {
    async before(upload) {
      previous = await upload.findPreviousUploads()
      if (previous.length === 0) throw new Error('findPreviousUploads() found nothing')
      upload.resumeFromPreviousUpload(previous[0])
    },
  })
  const heads = trace.filter((e) => e.run === 2 && e.method === 'HEAD')
  const resumedFrom = heads.length > 0 ? Number(heads[0].response?.['upload-offset']) : null
  const firstPatch = trace.find((e) => e.run === 2 && e.method === 'PATCH')
  if (!(resumedFrom > 0)) {
    throw new Error(`the second run did not resume at an offset > 0 (HEAD said ${resumedFrom})`)
  }
  if (count('POST', 2) !== 0) throw new Error('the second run created a new upload')
  return {
    url: second.upload.url,
    firstUrl,
    abortedAtProgress: abortedAt,
    previousUploads: previous.length,
    resumedFrom,
    firstPatchOffset: firstPatch ? Number(firstPatch.request['upload-offset']) : null,
  }
}

async function cut() {
  const retries = Number(params.retries ?? 200)
  const retryDelays = [0]
  for (let i = 1; i < retries; i++) retryDelays.push(Math.min(100 * 2 ** (i - 1), 800))
  const { upload } = await runUpload(fs.createReadStream(file), baseOptions({ retryDelays }))
  return {
    url: upload.url,
    offset: upload._offset,
    chunkSize: Number.isFinite(chunkSize) ? chunkSize : null,
    exchanges: offsetExchanges(),
  }
}

async function parallel() {
  const { upload } = await runUpload(fs.createReadStream(file), {
    ...baseOptions({ parallelUploads: 3 }),
    uploadSize: undefined,
  })
  return { url: upload.url, partials: upload._parallelUploadUrls }
}

async function deferred() {
  // By default a plain Readable (not an fs.ReadStream), so that the length
  // is unknown up front and tus-js-client's StreamSource finds the end by
  // reading. tus-js-client 4.3.1 stalls on such a stream when its length is
  // a multiple of chunkSize (tus/tus-js-client#779, a client bug), so
  // "input": "buffer" passes the bytes as a Buffer instead.
  const input =
    params.input === 'buffer'
      ? fs.readFileSync(file)
      : fs.createReadStream(file).pipe(new PassThrough())
  const { upload } = await runUpload(input, baseOptions({ uploadLengthDeferred: true }))
  const withLength = trace.filter((e) => e.method === 'PATCH' && e.request['upload-length'] != null)
  return {
    url: upload.url,
    offset: upload._offset,
    lengthSentAt: withLength.map((e) => Number(e.request['upload-offset'])),
  }
}

async function terminate() {
  let deleteError = null
  // Abort with termination in the middle of the second chunk's PATCH.
  const { upload } = await runUpload(fs.createReadStream(file), baseOptions(), {
    onProgress(upload, stop, sent) {
      if (sent > chunkSize && !upload._aborted) {
        upload
          .abort(true)
          .catch((err) => {
            deleteError = describeError(err)
          })
          .then(() => stop({ upload, finished: false }))
      }
    },
  })
  if (deleteError != null) throw new Error(`termination failed: ${deleteError}`)
  const del = trace.find((e) => e.method === 'DELETE')
  if (del == null) throw new Error('tus-js-client sent no DELETE')
  // Then the upload must be gone: HEAD answers 404 or 410.
  const res = await fetch(upload.url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } })
  const headOffset = res.headers.get('upload-offset')
  if (res.status !== 404 && res.status !== 410) {
    throw new Error(`HEAD after termination answered ${res.status}, expected 404 or 410`)
  }
  if (headOffset != null) {
    throw new Error(`HEAD after termination carried Upload-Offset: ${headOffset}`)
  }
  return { url: upload.url, deleteStatus: del.status, headAfterDelete: res.status }
}

/**
 * The exchanges that report an offset, for the test to check each
 * `Upload-Offset` against what was sent: every PATCH and HEAD, and the
 * creation POST (an append too when it carries data). `status` is null when
 * the request failed without an answer.
 */
function offsetExchanges() {
  return trace
    .filter((e) => ['POST', 'PATCH', 'HEAD'].includes(e.method))
    .map((e) => ({
      method: e.method,
      status: e.status ?? null,
      requestOffset: e.request?.['upload-offset'] ?? null,
      requestComplete: e.request?.['upload-complete'] ?? null,
      responseOffset: e.response?.['upload-offset'] ?? null,
    }))
}

async function ietf(protocol) {
  const { upload } = await runUpload(fs.createReadStream(file), baseOptions({ protocol }))
  const post = trace.find((e) => e.method === 'POST')
  return {
    url: upload.url,
    offset: upload._offset,
    postRequest: post?.request,
    postStatus: post?.status,
    chunkSize: Number.isFinite(chunkSize) ? chunkSize : null,
    exchanges: offsetExchanges(),
  }
}

const modes = {
  plain: () => plain(),
  resume,
  cut,
  parallel,
  'creation-with-upload': () => plain({ uploadDataDuringCreation: true }),
  deferred,
  terminate,
  'ietf-03': () => ietf('ietf-draft-03'),
  'ietf-05': () => ietf('ietf-draft-05'),
}

// If the client stops making progress without calling onSuccess or
// onError, the event loop empties: report that instead of exiting 0 silently.
process.on('beforeExit', () => {
  if (!reported) fail('tus-js-client stalled: it settled neither onSuccess nor onError')
})

if (!(mode in modes)) fail(`unknown mode ${mode}; known: ${Object.keys(modes).join(', ')}`)

try {
  const result = await modes[mode]()
  reported = true
  const summary = {}
  for (const e of trace) {
    const key = `${e.method} ${e.status ?? 'n/a'}`
    summary[key] = (summary[key] ?? 0) + 1
  }
  process.stdout.write(
    `${JSON.stringify({ ok: true, mode, size, ...result, requests: summary })}\n`,
  )
  process.exit(0)
} catch (err) {
  fail(describeError(err))
}
