#!/usr/bin/env python3
"""Upload one file to a tenax server with Google's google-resumable-media.

Usage:
    google_upload.py INIT_URL FILE CHUNK_SIZE MODE [NAME]

INIT_URL is where the session is initiated, e.g. http://127.0.0.1:PORT/uploads
(the name then travels as JSON metadata) or
http://127.0.0.1:PORT/api/upload?file=NAME. CHUNK_SIZE must be a multiple of
256 KiB (the library enforces it). NAME defaults to the file's base name.

Modes:
    plain    known size, chunk by chunk, no checksum
    md5      like plain, with checksum="md5" (the library checks md5Hash)
    crc32c   like plain, with checksum="crc32c" (the library checks crc32c)
    zero     a 0-byte object (the library sends an empty `bytes */0`)
    stream   unknown size (stream_final=False): `A-B/*` chunks, then
             `A-B/(B+1)` or an empty `bytes */N`
    recover  three interruptions that need `upload.recover()`:
               1. a chunk whose body is cut short (honest Content-Length)
                  gets a 4xx, so `upload.invalid` becomes true;
               2. a chunk dropped mid-body on the wire (the connection is
                  closed after half the body), raising ConnectionError;
               3. a chunk the server stored whose response is lost.
    retry    a chunk dropped mid-body on the wire once; the library's own
             retry loop resends the identical chunk (no recover()).

On success it prints the final object JSON on stdout and exits 0. Any failed
check raises (exit status 1) with a message on stderr.
"""

import base64
import hashlib
import io
import json
import os
import socket
import sys
import urllib.parse

import google_crc32c
import requests
from google.resumable_media import common
from google.resumable_media.requests import ResumableUpload

CONTENT_TYPE = "application/octet-stream"


def log(*args):
    print("google_upload:", *args, file=sys.stderr, flush=True)


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


class FaultyTransport:
    """A `requests.Session` stand-in that injects one fault per listed chunk.

    `faults` maps the index of a chunk PUT (0-based, counting only PUTs that
    carry a body) to one of "truncate", "drop", "lose-response".
    """

    def __init__(self, faults=None):
        self.session = requests.Session()
        self.faults = dict(faults or {})
        self.chunk_puts = 0
        self.injected = []

    def request(self, method, url, data=None, headers=None, **kwargs):
        fault = None
        if method == "PUT" and data:
            fault = self.faults.pop(self.chunk_puts, None)
            self.chunk_puts += 1
        content_range = (headers or {}).get("content-range")
        if fault is None:
            response = self.session.request(
                method, url, data=data, headers=headers, **kwargs
            )
            log(
                f"{method} {content_range or ''} -> {response.status_code}"
                f" range={response.headers.get('range')}"
            )
            return response
        self.injected.append((fault, content_range, len(data)))
        if fault == "truncate":
            # Send only half the body. requests sets Content-Length to the
            # real (shorter) length, so Content-Range no longer matches it:
            # the server must answer 400, which the library does not retry.
            short = data[: len(data) // 2]
            response = self.session.request(
                method, url, data=short, headers=headers, **kwargs
            )
            log(
                f"{method} {content_range} with {len(short)} of {len(data)}"
                f" bytes -> {response.status_code}"
            )
            return response
        if fault == "drop":
            sent = send_partial_and_close(url, headers, data, len(data) // 2)
            log(f"{method} {content_range}: dropped after {sent} of {len(data)} bytes")
            raise requests.exceptions.ConnectionError(
                f"injected: connection dropped after {sent} body bytes"
            )
        if fault == "lose-response":
            response = self.session.request(
                method, url, data=data, headers=headers, **kwargs
            )
            log(
                f"{method} {content_range} -> {response.status_code}"
                " (response discarded)"
            )
            raise requests.exceptions.ConnectionError("injected: response lost")
        raise AssertionError(f"unknown fault {fault}")


def send_partial_and_close(url, headers, body, count):
    """Writes a PUT with the full Content-Length but only `count` body bytes,
    then closes the connection without reading a response."""
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"PUT {target} HTTP/1.1", f"Host: {parts.netloc}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((parts.hostname, parts.port or 80)) as sock:
        sock.sendall(head + body[:count])
        # Half-close: the server sees end-of-stream before Content-Length
        # bytes arrived, as when a client dies mid-request.
        sock.shutdown(socket.SHUT_WR)
    return count


def crc32c_b64(data):
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


def main(argv):
    if len(argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    init_url, path, chunk_size, mode = argv[1], argv[2], int(argv[3]), argv[4]
    name = argv[5] if len(argv) == 6 else os.path.basename(path)
    with open(path, "rb") as f:
        data = f.read()
    size = len(data)

    checksum = mode if mode in ("md5", "crc32c") else None
    faults = {}
    if mode == "recover":
        faults = {1: "truncate", 3: "drop", 5: "lose-response"}
    elif mode == "retry":
        faults = {1: "drop"}
    elif mode not in ("plain", "md5", "crc32c", "zero", "stream"):
        raise Failure(f"unknown mode {mode!r}")
    if mode == "zero":
        check(size == 0, f"mode zero needs an empty file, got {size} bytes")
    if faults:
        needed_chunks = max(faults) + 2
        check(
            size >= needed_chunks * chunk_size,
            f"mode {mode} needs at least {needed_chunks} chunks of {chunk_size}",
        )

    transport = FaultyTransport(faults)
    upload = ResumableUpload(init_url, chunk_size, checksum=checksum)
    if mode == "recover":
        # Fail at once on a connection error instead of retrying it, so the
        # caller has to recover().
        upload._retry_strategy = common.RetryStrategy(max_retries=0)
    elif mode == "retry":
        upload._retry_strategy = common.RetryStrategy(
            max_retries=3, initial_delay=0.2
        )

    stream = io.BytesIO(data)
    if mode == "stream":
        upload.initiate(
            transport, stream, {"name": name}, CONTENT_TYPE, stream_final=False
        )
        check(upload.total_bytes is None, "the size should be unknown")
    else:
        upload.initiate(
            transport, stream, {"name": name}, CONTENT_TYPE, total_bytes=size
        )
    log(f"session {upload.resumable_url}")
    check(
        upload.resumable_url.startswith("http://"),
        f"Location is not absolute: {upload.resumable_url!r}",
    )

    recoveries = 0
    response = None
    while not upload.finished:
        before = upload.bytes_uploaded
        try:
            response = upload.transmit_next_chunk(transport)
        except (requests.exceptions.ConnectionError, common.InvalidResponse) as e:
            if mode != "recover":
                raise
            recoveries += 1
            status = getattr(getattr(e, "response", None), "status_code", None)
            log(
                f"chunk at {before} failed ({type(e).__name__}, status {status});"
                f" invalid={upload.invalid}"
            )
            if isinstance(e, common.InvalidResponse):
                check(upload.invalid, "a rejected chunk should make the upload invalid")
            recovered = upload.recover(transport)
            check(
                recovered.status_code == 308,
                f"recover: expected 308, got {recovered.status_code}",
            )
            check(not upload.invalid, "recover() left the upload invalid")
            log(
                f"recovered: server holds {upload.bytes_uploaded} bytes"
                f" (range={recovered.headers.get('range')})"
            )
            check(
                upload.bytes_uploaded <= size,
                f"server claims {upload.bytes_uploaded} bytes of {size}",
            )
            continue
        if not upload.finished:
            check(
                response.status_code == 308,
                f"expected 308 mid-upload, got {response.status_code}",
            )
            check(
                upload.bytes_uploaded > before,
                f"no progress: {before} -> {upload.bytes_uploaded}",
            )

    check(response is not None, "no chunk was sent")
    check(response.status_code == 200, f"final status {response.status_code}")
    check(upload.bytes_uploaded == size, f"uploaded {upload.bytes_uploaded} != {size}")
    body = response.json()
    log(f"final object: {body}")
    check(body.get("size") == str(size), f"size {body.get('size')!r} != {str(size)!r}")
    check(body.get("name") == name, f"name {body.get('name')!r} != {name!r}")
    check(
        body.get("contentType") == CONTENT_TYPE,
        f"contentType {body.get('contentType')!r} != {CONTENT_TYPE!r}",
    )
    expected_md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    check(
        body.get("md5Hash") == expected_md5,
        f"md5Hash {body.get('md5Hash')!r} != {expected_md5!r}",
    )
    expected_crc = crc32c_b64(data)
    check(
        body.get("crc32c") == expected_crc,
        f"crc32c {body.get('crc32c')!r} != {expected_crc!r}",
    )
    expected_sha = hashlib.sha256(data).hexdigest()
    check(
        body.get("sha256") == expected_sha,
        f"sha256 {body.get('sha256')!r} != {expected_sha!r}",
    )
    if mode == "recover":
        check(recoveries == 3, f"expected 3 recoveries, got {recoveries}")
    check(not transport.faults, f"faults not injected: {transport.faults}")
    print(json.dumps(body))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Failure as e:
        log(f"FAILED: {e}")
        sys.exit(1)
