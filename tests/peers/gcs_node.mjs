// Drives Google's Node storage library, @google-cloud/storage, against the
// tenax server named by STORAGE_EMULATOR_HOST (crates/cli/tests/gcs_client.rs):
//
//     node gcs_node.mjs BUCKET NAME FILE CHUNK_SIZE
//
// A resumable createWriteStream upload of FILE (its default checksum check
// on), then a download of the object. Prints one JSON line: the object's
// metadata as the library saw it, and the SHA-256 of what it downloaded.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { Storage } from "@google-cloud/storage";

const [bucketName, name, path, chunk] = process.argv.slice(2);
// The endpoint as the emulator docs give it for Node: the server itself
// (STORAGE_EMULATOR_HOST would have to name `/storage/v1` for this library).
const storage = new Storage({
  projectId: "tenax-test",
  apiEndpoint: process.env.TENAX_URL,
});
const file = storage.bucket(bucketName).file(name);
await pipeline(
  createReadStream(path),
  file.createWriteStream({
    resumable: true,
    chunkSize: Number(chunk),
    contentType: "application/x-test",
    metadata: { metadata: { origin: "node" } },
  }),
);
const [metadata] = await file.getMetadata();
const [contents] = await file.download();
const sha256 = createHash("sha256").update(contents).digest("hex");
console.log(JSON.stringify({ metadata, downloaded: contents.length, sha256 }));
