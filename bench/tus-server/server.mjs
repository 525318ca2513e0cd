// The reference tus server for bench/run: @tus/server with @tus/file-store.
//
//   node server.mjs DIRECTORY [PORT]
//
// Listens on 127.0.0.1:PORT (default 0, any free port), tus at /uploads,
// files stored in DIRECTORY (created if missing; each upload is the file
// DIRECTORY/<id>, its metadata DIRECTORY/<id>.json). The first line on
// stdout is `listening on http://127.0.0.1:PORT`, as with `tenax serve`.
// Stops on SIGTERM or SIGINT.
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const [directory, portArg = "0"] = process.argv.slice(2);
if (!directory) {
  console.error("usage: node server.mjs DIRECTORY [PORT]");
  process.exit(2);
}
const port = Number.parseInt(portArg, 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`bad port ${JSON.stringify(portArg)}`);
  process.exit(2);
}

const tus = new Server({
  path: "/uploads",
  datastore: new FileStore({ directory }),
});
const http = tus.listen({ host: "127.0.0.1", port }, () => {
  const address = http.address();
  process.stdout.write(`listening on http://127.0.0.1:${address.port}\n`);
});
http.on("error", (error) => {
  console.error(`cannot listen: ${error.message}`);
  process.exit(1);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    http.close();
    http.closeAllConnections?.();
    process.exit(0);
  });
}
