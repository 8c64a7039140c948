"""Uploading a file for `/send-file` (protocol 1.2): an HTTP POST of one
multipart form to the server's /files/, with the resume token as a bearer
token, streamed from disk in chunks so a big file costs no memory and can
report its progress. Blocking: the client runs it in a thread."""

from __future__ import annotations

import http.client
import json
import mimetypes
import os
import ssl
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

CHUNK = 64 * 1024
# Files this big or bigger get progress lines.
PROGRESS_FROM = 1024 * 1024


class UploadFailed(Exception):
    """Why the file was not uploaded, in a sentence for the person."""


def http_base(ws_url: str) -> str:
    """ws://host:port/ws/chat/ → http://host:port (wss → https)."""
    parsed = urlparse(ws_url)
    scheme = "https" if parsed.scheme == "wss" else "http"
    return f"{scheme}://{parsed.netloc}"


def upload(
    base: str, token: str, path: str, *, progress: Callable[[int, int], None] | None = None, timeout: float = 60
) -> dict[str, Any]:
    """Upload the file at `path`; the server's attachment object, or UploadFailed."""
    path = os.path.expanduser(path)
    try:
        size = os.path.getsize(path)
        handle = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise UploadFailed(f"Cannot read {path}: {e.strerror or e}.") from None
    name = os.path.basename(path)
    boundary = uuid.uuid4().hex
    quoted = name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
        f"Content-Type: {kind}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    parsed = urlparse(base)
    if parsed.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parsed.netloc, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parsed.netloc, timeout=timeout)
    try:
        with handle:
            conn.putrequest("POST", "/files/")
            conn.putheader("Authorization", f"Bearer {token}")
            conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
            conn.putheader("Content-Length", str(len(head) + size + len(tail)))
            conn.endheaders()
            conn.send(head)
            sent = 0
            while chunk := handle.read(CHUNK):
                conn.send(chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent, size)
            conn.send(tail)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as e:
        # The server may refuse (413) and close before the body is all sent.
        try:
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            raise UploadFailed(f"The upload failed: {e}.") from None
    finally:
        conn.close()
    try:
        answer: dict[str, Any] = json.loads(body)
    except ValueError:
        answer = {}
    if response.status == 201:
        return answer
    raise UploadFailed(answer.get("message") or f"The server refused it (HTTP {response.status}).")
