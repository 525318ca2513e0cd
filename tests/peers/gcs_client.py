"""Drives Google's own storage library, google-cloud-storage, against a
tenax server named by STORAGE_EMULATOR_HOST (crates/cli/tests/gcs_client.rs).

    gcs_client.py OP BUCKET [ARGS...]

Prints one JSON line on success; a library exception is printed as
{"error": CLASS, "code": HTTP status} and exits 0, so that the test can
check which exception the library raised.
"""

import base64
import hashlib
import json
import os
import sys

import google_crc32c
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage._media.requests import ResumableUpload


def client():
    return storage.Client(
        project="tenax-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]},
    )


def digests(data):
    crc = google_crc32c.Checksum()
    crc.update(data)
    return {
        "size": len(data),
        "md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
        "crc32c": base64.b64encode(crc.digest()).decode(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def describe(blob):
    return {
        "name": blob.name,
        "bucket": blob.bucket.name,
        "size": blob.size,
        "md5": blob.md5_hash,
        "crc32c": blob.crc32c,
        "generation": blob.generation,
        "metageneration": blob.metageneration,
        "content_type": blob.content_type,
        "metadata": blob.metadata,
        "media_link": blob.media_link,
        "id": blob.id,
    }


def main():
    op, bucket_name = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    bucket = client().bucket(bucket_name)
    if op == "upload":
        # upload NAME FILE CHUNK_SIZE (0: multipart) [IF_GENERATION_MATCH]
        name, path, chunk = args[0], args[1], int(args[2])
        blob = bucket.blob(name, chunk_size=chunk or None)
        blob.metadata = {"origin": "gcs-test"}
        kwargs = {}
        if len(args) > 3:
            kwargs["if_generation_match"] = int(args[3])
        blob.upload_from_filename(path, content_type="application/x-test", **kwargs)
        return describe(blob)
    if op == "session":
        # session NAME FILE FIRST: a session, and its first FIRST bytes sent
        name, path, first = args[0], args[1], int(args[2])
        data = open(path, "rb").read()
        blob = bucket.blob(name)
        url = blob.create_resumable_upload_session(
            content_type="application/x-test", size=len(data)
        )
        if first:
            transport = bucket.client._http
            response = transport.put(
                url,
                data=data[:first],
                headers={"Content-Range": f"bytes 0-{first - 1}/{len(data)}"},
            )
            assert response.status_code == 308, response.status_code
        return {"url": url}
    if op == "finish":
        # finish URL FILE CHUNK: another process asks where the session is
        # (a status query) and sends the rest
        url, path, chunk = args[0], args[1], int(args[2])
        stream = open(path, "rb")
        size = os.path.getsize(path)
        upload = ResumableUpload(url, chunk)
        upload._resumable_url = url
        upload._stream = stream
        upload._total_bytes = size
        upload._content_type = "application/x-test"
        upload._invalid = True
        transport = bucket.client._http
        upload.recover(transport)
        resumed_at = upload.bytes_uploaded
        # The CRC32C the library sends in x-goog-hash with the last chunk
        # must cover the bytes the first process sent too.
        with open(path, "rb") as head:
            upload._checksum_object = google_crc32c.Checksum()
            upload._checksum_object.update(head.read(resumed_at))
        upload._bytes_checksummed = resumed_at
        response = None
        while not upload.finished:
            response = upload.transmit_next_chunk(transport)
        final = response.json()
        return {"resumed_at": resumed_at, "object": final}
    if op == "download":
        # download NAME [START END]
        blob = bucket.blob(args[0])
        if len(args) > 1:
            data = blob.download_as_bytes(start=int(args[1]), end=int(args[2]))
        else:
            data = blob.download_as_bytes()
        return digests(data)
    if op == "reload":
        blob = bucket.blob(args[0])
        blob.reload()
        return describe(blob)
    if op == "list":
        # list PREFIX DELIMITER MAX_RESULTS (empty strings: none)
        prefix, delimiter, page = args[0] or None, args[1] or None, int(args[2] or 0)
        listed = bucket.client.list_blobs(
            bucket, prefix=prefix, delimiter=delimiter, max_results=None,
            page_size=page or None,
        )
        names = [blob.name for blob in listed]
        return {"names": names, "prefixes": sorted(listed.prefixes)}
    if op == "delete":
        bucket.blob(args[0]).delete()
        return {"deleted": args[0]}
    raise SystemExit(f"unknown op {op}")


if __name__ == "__main__":
    try:
        result = main()
    except exceptions.GoogleAPICallError as error:
        result = {"error": type(error).__name__, "code": error.code, "message": error.message}
    print(json.dumps(result))
