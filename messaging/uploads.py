"""Attachments over HTTP: the upload and the download views, and the ASGI
guard that refuses an upload too large before its bytes are kept.

Uploads do not go through the WebSocket (a frame is at most 64 KiB, and a
file would hold up everything behind it). The page calls these views with
its session cookie (and CSRF token), the terminal client with its resume
token as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.http import content_disposition_header
from django.views.decorators.csrf import csrf_exempt

from accounts import selectors as account_selectors
from accounts.models import User as UserModel
from core import metrics
from core.errors import ServiceError

from . import selectors, services, wire
from .services.attachments import storage

log = logging.getLogger("chat")

UPLOAD_PATH = "/files/"
# A multipart body is the file plus its part headers and boundaries.
MULTIPART_OVERHEAD = 64 * 1024

STATUS = {"invalid": 400, "not_logged_in": 401, "forbidden": 403, "not_found": 404, "too_large": 413}
STATUS["rate_limited"] = 429


def _error(code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse(wire.error(code, message, **extra), status=STATUS.get(code, 400))


def _body_limit() -> int:
    return settings.CHAT_ATTACHMENT_MAX_BYTES + MULTIPART_OVERHEAD


def _too_large() -> str:
    return f"A file may be at most {settings.CHAT_ATTACHMENT_MAX_BYTES / (1024 * 1024):g} MiB."


class _Limit(FileUploadHandler):
    """Counts a file's bytes as the parser streams them, and stops the
    upload past the limit (a body without Content-Length, or one that lies)."""

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > settings.CHAT_ATTACHMENT_MAX_BYTES:
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


async def _user(request: HttpRequest) -> tuple[UserModel | None, bool]:
    """(the user, whether they came with a bearer token). A token is a
    resume token, a Django session key; otherwise the session cookie. Both
    pass the same check as the socket's login (sessions_check)."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        token = auth[len("Bearer ") :].strip()
        if not token or len(token) > account_selectors.TOKEN_MAX:
            return None, True
        return await sync_to_async(account_selectors.user_for_session)(token), True
    key = request.session.session_key
    return await sync_to_async(account_selectors.user_for_session)(key), False


def _csrf_refusal(request: HttpRequest) -> HttpResponse | None:
    """Django's CSRF check, for uploads with the cookie (a bearer token is
    never sent by a browser on its own, so it needs none)."""
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})  # type: ignore[arg-type]


def _parse(request: HttpRequest) -> tuple[Any, str]:
    """The one file of the request (field `file`), streamed to a temporary
    file by Django past FILE_UPLOAD_MAX_MEMORY_SIZE."""
    upload = request.FILES.get("file")
    if upload is None:
        if int(request.META.get("CONTENT_LENGTH") or 0) > settings.CHAT_ATTACHMENT_MAX_BYTES:
            raise ServiceError("too_large", _too_large())
        raise ServiceError("invalid", "Send one file, in the form field `file`.")
    if len(request.FILES.getlist("file")) > 1:
        raise ServiceError("invalid", "One file per upload.")
    return upload, request.POST.get("name") or upload.name or ""


_pool: ThreadPoolExecutor | None = None


def _workers() -> ThreadPoolExecutor:
    """The threads that parse and check uploads, CHAT_UPLOAD_THREADS of them
    (2): fifty uploads at once then queue for them instead of taking every
    core from the event loop and the database thread, so chat messages keep
    their latency (docs/performance.md)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(settings.CHAT_UPLOAD_THREADS, thread_name_prefix="upload")
    return _pool


def _check(request: HttpRequest) -> tuple[Any, services.attachments.Checked]:
    upload, name = _parse(request)
    return upload, services.attachment_check(file=upload, name=name, size=upload.size)


@csrf_exempt
async def upload(request: HttpRequest) -> HttpResponse:
    """POST a file (multipart, field `file`); answers the attachment object,
    whose id `send` and `broadcast` accept in `attachments`."""
    if request.method != "POST":
        return _error("invalid", "Upload with POST.")
    user, bearer = await _user(request)
    if user is None:
        return _error("not_logged_in", "Log in to upload files.")
    if int(request.META.get("CONTENT_LENGTH") or 0) > _body_limit():
        return _error("too_large", _too_large())
    # Before anything reads the body (the CSRF check may read the form).
    request.upload_handlers = [_Limit(request), *request.upload_handlers]
    if not bearer:
        refusal = await sync_to_async(_csrf_refusal, thread_sensitive=False)(request)
        if refusal is not None:
            return _error("forbidden", "The upload lacks the page's CSRF token; reload the page.")
    try:
        # Parsing and Pillow are CPU and disk work: a worker thread, not
        # the event loop (nor the one thread Django's sync views share).
        file, checked = await asyncio.get_running_loop().run_in_executor(_workers(), _check, request)
        attachment = await sync_to_async(services.attachment_store)(uploader=user, file=file, checked=checked)
    except ServiceError as e:
        metrics.uploads.labels(e.code).inc()
        return _error(e.code, e.message, **e.extra)
    finally:
        if hasattr(request, "_files"):
            for f in request.FILES.values():
                f.close()  # type: ignore[union-attr]
    metrics.uploads.labels("stored").inc()
    metrics.upload_bytes.inc(attachment.size)
    return JsonResponse(wire.attachment_object(attachment), status=201)


async def download(request: HttpRequest, attachment_id: int, thumbnail: bool = False) -> HttpResponse | FileResponse:
    """The file, to whoever may see its message in history (or its uploader
    before it is sent); 404 to anyone else, as to a file that never was."""
    user, _ = await _user(request)
    try:
        attachment = await sync_to_async(selectors.attachment_for_download)(user=user, attachment_id=attachment_id)
    except ServiceError:
        return HttpResponse("There is no such file.", status=404, content_type="text/plain")
    if thumbnail and not attachment.thumbnail:
        return HttpResponse("There is no such file.", status=404, content_type="text/plain")
    name = attachment.thumbnail if thumbnail else attachment.stored
    if thumbnail:
        content_type = "image/png" if name.endswith(".png") else "image/jpeg"
    else:
        content_type = attachment.content_type
    # Inline only for images this server re-encoded itself; anything else is
    # a download, whatever a browser would make of it.
    inline = attachment.is_image
    store = storage()
    accel = settings.CHAT_FILES_ACCEL_REDIRECT
    response: HttpResponse | FileResponse
    if accel and isinstance(store, FileSystemStorage):
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = accel.rstrip("/") + "/" + quote(name)
    else:
        try:
            handle = await sync_to_async(store.open, thread_sensitive=False)(name, "rb")
        except (FileNotFoundError, OSError):
            log.warning("attachment %s: %s is missing from the storage", attachment.pk, name)
            return HttpResponse("There is no such file.", status=404, content_type="text/plain")
        response = FileResponse(handle, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(not inline, attachment.name) or "attachment"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-cache"
    # A file opened on its own is sandboxed: no script of it runs as the site.
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    return response


class UploadGuard:
    """ASGI middleware in front of Django for the upload path: Django's ASGI
    handler keeps the whole body (on disk past FILE_UPLOAD_MAX_MEMORY_SIZE)
    before any view runs, so an upload over the limit is refused here: at
    once by its Content-Length, or, counted as it streams, as soon as it
    passes the limit, with nothing of it kept."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != UPLOAD_PATH:
            return await self.app(scope, receive, send)
        limit = _body_limit()
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await _refuse(send)
        seen = 0
        over = False
        started = False

        async def counted() -> dict[str, Any]:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    # Django sees the client gone, drops what it kept, and
                    # answers nothing; the refusal is ours to send.
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted, watched)
        if over and not started:
            await _refuse(send)


async def _refuse(send: Any) -> None:
    body = JsonResponse(wire.error("too_large", _too_large())).content
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
