"""bench/clients' driver for tuspy (package `tusclient`), as an application
uses it: `TusClient(endpoint).uploader(file_path=..., chunk_size=...)`
then `upload()`, every other option at its default (no retries, no
checksum, no URL storage); nothing traced.

    target/peers/venv/bin/python bench/clients.d/tuspy.py ENDPOINT FILE CHUNK_SIZE NAME

ENDPOINT is the tus collection (http://127.0.0.1:PORT/uploads), NAME goes
into the `filename` metadata. Prints one JSON line on stdout,
{"ok": true, "url": ...} (exit 0) or {"ok": false, "error": ...} (exit 1).
"""

import json
import sys


def main():
    if len(sys.argv) != 5:
        print(json.dumps({"ok": False, "error": "usage: tuspy.py ENDPOINT FILE CHUNK_SIZE NAME"}))
        return 2
    endpoint, path, chunk_size, name = sys.argv[1:5]
    try:
        from tusclient import client
    except ImportError as error:
        print(json.dumps({"ok": False, "error": f"cannot import tusclient: {error}"}))
        return 2
    try:
        uploader = client.TusClient(endpoint).uploader(
            file_path=path, chunk_size=int(chunk_size), metadata={"filename": name}
        )
        uploader.upload()
    except Exception as error:  # noqa: BLE001: reported to bench/clients
        print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
        return 1
    print(json.dumps({"ok": True, "url": uploader.url, "offset": uploader.offset}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
