#!/usr/bin/env python3
"""Upload files to a tenax server with aiotus, for crates/cli/tests/aiotus_client.rs.

Usage:
    aiotus_upload.py ENDPOINT NAME CHUNK_SIZE PARALLEL PART...

With one PART, `aiotus.upload` (creation, then PATCHes of CHUNK_SIZE).
With several, `aiotus.upload_multiple`: each part is its own partial tus
upload (`Upload-Concat: partial`), PARALLEL of them at once, and a final
upload (`Upload-Concat: final;URL URL …`) joins them on the server. NAME
travels as the `filename` metadata of the single or final upload.

Prints one JSON line {"ok": true, "location": URL} and exits 0, or
{"ok": false, "error": …} and exits 1 (aiotus returns None when it gives
up; its log goes to stderr).
"""

import asyncio
import json
import logging
import sys

import aiotus


async def main() -> int:
    endpoint, name, chunk_size, parallel, *parts = sys.argv[1:]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    config = aiotus.RetryConfiguration(retry_attempts=10, max_retry_period_seconds=2.0)
    metadata = {"filename": name.encode()}
    files = [open(part, "rb") for part in parts]
    try:
        if len(files) == 1:
            location = await aiotus.upload(
                endpoint, files[0], metadata, config=config, chunksize=int(chunk_size)
            )
        else:
            location = await aiotus.upload_multiple(
                endpoint,
                files,
                metadata,
                config=config,
                chunksize=int(chunk_size),
                parallel_uploads=int(parallel),
            )
    finally:
        for file in files:
            file.close()
    if location is None:
        print(json.dumps({"ok": False, "error": "aiotus gave up (see its log)"}))
        return 1
    print(json.dumps({"ok": True, "location": str(location)}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
