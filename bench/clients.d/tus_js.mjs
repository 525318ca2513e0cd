// bench/clients' driver for tus-js-client (Node build), as an application
// uses it: one tus.Upload of an fs.ReadStream (tus-js-client reads each
// chunk from the file), chunkSize set, every other option at its default;
// no hooks, no tracing (the test driver tests/peers/tus_upload.mjs traces
// every request, which costs CPU).
//
//   NODE_PATH=target/peers/node/node_modules \
//     node bench/clients.d/tus_js.mjs ENDPOINT FILE CHUNK_SIZE NAME
//
// ENDPOINT is the tus collection (http://127.0.0.1:PORT/uploads), NAME goes
// into the `filename` metadata. Prints one JSON line on stdout,
// {"ok": true, "url": ...} (exit 0) or {"ok": false, "error": ...} (exit 1).

import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

function report(line, code) {
  process.stdout.write(`${JSON.stringify(line)}\n`)
  process.exit(code)
}

const [endpoint, file, chunkArg, name] = process.argv.slice(2)
if (!endpoint || !file || !chunkArg || !name) {
  report({ ok: false, error: 'usage: tus_js.mjs ENDPOINT FILE CHUNK_SIZE NAME' }, 2)
}
const chunkSize = Number(chunkArg)
if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) {
  report({ ok: false, error: `bad chunk size ${chunkArg}` }, 2)
}

let tus
try {
  // ESM imports ignore NODE_PATH: resolve the CommonJS way, then import.
  const entry = createRequire(import.meta.url).resolve('tus-js-client')
  tus = await import(pathToFileURL(entry).href)
} catch (err) {
  report({ ok: false, error: `cannot load tus-js-client (NODE_PATH=${process.env.NODE_PATH}): ${err}` }, 2)
}

let settled = false
const upload = new tus.Upload(fs.createReadStream(file), {
  endpoint,
  chunkSize,
  metadata: { filename: name, filetype: 'application/octet-stream' },
  onSuccess() {
    settled = true
    report({ ok: true, url: upload.url, offset: upload._offset }, 0)
  },
  onError(err) {
    settled = true
    report({ ok: false, error: String(err?.message ?? err) }, 1)
  },
})
// A client that settles neither way empties the event loop: say so.
process.on('beforeExit', () => {
  if (!settled) report({ ok: false, error: 'tus-js-client stalled (neither onSuccess nor onError)' }, 1)
})
upload.start()
