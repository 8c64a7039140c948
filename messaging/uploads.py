"""Attachments over HTTP: the upload and the download views, and the ASGI
guard that refuses an upload too large before its bytes are kept.

Uploads do not go through the WebSocket (a frame is at most 64 KiB, and a
file would hold up everything behind it). The page calls these views with
its session cookie (and CSRF token), the terminal client with its resume
token as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.datastructures import MultiValueDict
from django.utils.http import content_disposition_header
from django.views.decorators.csrf import csrf_exempt

from accounts import selectors as account_selectors
from accounts.models import User as UserModel
from core import metrics
from core.errors import ServiceError

from . import selectors, services, upload_worker, wire
from .models import Attachment
from .runtime import runtime
from .services.attachments import storage

log = logging.getLogger("chat")

UPLOAD_PATH = "/files/"
# A multipart body is the file plus its part headers and boundaries.
MULTIPART_OVERHEAD = 64 * 1024
CHUNK = 64 * 1024

STATUS = {"invalid": 400, "not_logged_in": 401, "forbidden": 403, "not_found": 404, "too_large": 413}
STATUS["rate_limited"] = 429


def _error(code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse(wire.error(code, message, **extra), status=STATUS.get(code, 400))


def _body_limit() -> int:
    return settings.CHAT_ATTACHMENT_MAX_BYTES + MULTIPART_OVERHEAD


def _too_large() -> str:
    return upload_worker.too_large(settings.CHAT_ATTACHMENT_MAX_BYTES)


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
    never sent by a browser on its own, so it needs none). The token comes
    in the X-CSRFToken header (docs/protocol.md): Django's check would look
    in the form first, parsing the whole body here, on the event loop."""
    request._post, request._files = QueryDict(), MultiValueDict()  # type: ignore[attr-defined]
    try:
        return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})  # type: ignore[arg-type]
    finally:
        del request._post, request._files  # type: ignore[attr-defined]


def _body_saved(request: HttpRequest) -> str:
    """A folder of the upload's own, with the request's body in it as
    `body`, copied in chunks (the server spooled it to disk already)."""
    folder = tempfile.mkdtemp(prefix="upload-", dir=settings.FILE_UPLOAD_TEMP_DIR)
    try:
        with open(os.path.join(folder, "body"), "wb") as out:
            shutil.copyfileobj(request, out, CHUNK)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _job(request: HttpRequest, folder: str) -> upload_worker.Job:
    return upload_worker.Job(
        folder=folder,
        content_type=request.META.get("CONTENT_TYPE", ""),
        content_length=int(request.META.get("CONTENT_LENGTH") or 0),
        settings={name: getattr(settings, name) for name in upload_worker.SETTINGS},
    )


def _store(uploader: UserModel, outcome: upload_worker.Outcome) -> Attachment:
    with open(outcome.file, "rb") as file:
        return services.attachment_store(uploader=uploader, file=file, checked=outcome.checked)


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
    if not bearer and _csrf_refusal(request) is not None:
        return _error("forbidden", "The upload lacks the page's CSRF token; reload the page.")
    folder = await sync_to_async(_body_saved, thread_sensitive=False)(request)
    try:
        # Parsing and Pillow hold a GIL for much of their work: another
        # process's (runtime.upload_check), not this one's, whose event
        # loop serves every chat socket. Storing streams from the file the
        # check left in the folder.
        outcome = await runtime.upload_check(_job(request, folder))
        if outcome.error is not None:
            code, message, extra = outcome.error
            raise ServiceError(code, message, **extra)
        attachment = await sync_to_async(_store)(user, outcome)
    except ServiceError as e:
        metrics.uploads.labels(e.code).inc()
        return _error(e.code, e.message, **e.extra)
    finally:
        await sync_to_async(shutil.rmtree, thread_sensitive=False)(folder, ignore_errors=True)
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
    passes the limit, with nothing of it kept. Past that, a few uploads at
    a time (runtime.upload_slot) go on to Django."""

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

        async with runtime.upload_slot():
            await self.app(scope, counted, watched)
        if over and not started:
            await _refuse(send)


async def _refuse(send: Any) -> None:
    body = JsonResponse(wire.error("too_large", _too_large())).content
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
