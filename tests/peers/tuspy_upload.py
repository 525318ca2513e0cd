"""Drives tuspy (the tus project's Python client, package `tusclient`)
against a tenax server. Used by crates/cli/tests/tuspy_client.rs; tuspy is
installed by scripts/test into target/peers/venv from
tests/peers/requirements.txt.

Usage: python tuspy_upload.py ENDPOINT FILE CHUNK_SIZE NAME

Uploads FILE to ENDPOINT (`.../uploads`) in chunks of CHUNK_SIZE bytes, one
`upload_chunk()` at a time, and records the offset before and after each
(tuspy takes the offset after a chunk from the answer's Upload-Offset).
Prints one JSON line: {"ok": true, "url": ..., "offset": ..., "chunks":
[[before, after], ...]}, or {"ok": false, "error": ...} (exit code 1).

tuspy 1.1.0 always sends Upload-Length at creation (it has no deferred
length), so the test covers its half of case 55 with a known length.
"""

import json
import os
import sys


def main():
    endpoint, path, chunk_size, name = sys.argv[1:5]
    chunk_size = int(chunk_size)
    try:
        from tusclient import client
    except ImportError as error:
        print(json.dumps({"ok": False, "error": f"cannot import tusclient (run scripts/test): {error}"}))
        return 2
    size = os.path.getsize(path)
    try:
        uploader = client.TusClient(endpoint).uploader(
            file_path=path,
            chunk_size=chunk_size,
            metadata={"filename": name},
            retries=0,
        )
        chunks = []
        # Bounded: one round per chunk, and a few more.
        for _ in range(size // chunk_size + 3):
            if uploader.offset >= size:
                break
            before = uploader.offset
            uploader.upload_chunk()
            chunks.append([before, uploader.offset])
            sys.stderr.write(f"chunk {before} -> {uploader.offset}\n")
        print(json.dumps({"ok": True, "url": uploader.url, "offset": uploader.offset, "size": size, "chunks": chunks}))
        return 0
    except Exception as error:  # noqa: BLE001: the test reports it
        print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
        return 1


if __name__ == "__main__":
    sys.exit(main())
