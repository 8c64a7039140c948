"""What the upload processes run: parse an upload's multipart body from a
file on disk and check what it holds (`services.attachment_check`: the
name, the type against the bytes, an image decoded and re-encoded by
Pillow), out of the server process.

Django's multipart parser and much of the checking are Python code that
holds the GIL; in a thread of the server they took it from the event
loop, which serves every chat socket (docs/performance.md). Here they run
in other processes, at a lower CPU priority, owned by `runtime`: the
server hands over the path of the request's body, not its bytes, and
gets back what the check found; storing stays in the server.

A job carries the settings the checks read, as the server has them, so
a worker started long ago (or by a test that changed them since) checks
what the server would.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http.multipartparser import MultiPartParser

from core.errors import ServiceError

# The settings `check` reads, passed with each job.
SETTINGS = (
    "CHAT_ATTACHMENT_MAX_BYTES",
    "CHAT_ATTACHMENT_TYPES",
    "CHAT_IMAGE_MAX_PIXELS",
    "CHAT_THUMBNAIL_PIXELS",
    "DATA_UPLOAD_MAX_MEMORY_SIZE",
    "DATA_UPLOAD_MAX_NUMBER_FIELDS",
    "DATA_UPLOAD_MAX_NUMBER_FILES",
    "DEFAULT_CHARSET",
)


@dataclass(frozen=True)
class Job:
    folder: str  # the job's own folder: the body is `body` in it, files go there too
    content_type: str
    content_length: int
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What the check found: `checked` and the path of the file's bytes,
    or the refusal (a ServiceError's code, message and extra, since the
    exception itself does not cross processes); and who checked it."""

    pid: int
    checked: Any = None  # services.attachments.Checked
    file: str = ""
    error: tuple[str, str, dict[str, Any]] | None = None


def start(nice: int, server: int) -> None:
    """A worker's start: a lower CPU priority than the server's event loop
    (first: importing Django takes a second of CPU), then Django's apps
    (the checks' imports need them). It ends when the server process does,
    however that ends (killed, it never stops its pool)."""
    import django

    threading.Thread(target=_follow, args=(server,), daemon=True, name="follow-server").start()
    if nice > 0:
        os.nice(nice)
    django.setup()


def _follow(server: int) -> None:
    while os.getppid() == server:
        time.sleep(1)
    os._exit(0)


def check(job: Job) -> Outcome:
    """Parse the body in `job.folder` and check its one file."""
    for name, value in job.settings.items():
        setattr(settings, name, value)
    try:
        upload, name, path = _parse(job)
        from .services.attachments import attachment_check  # needs the apps: after `start`

        with upload:
            checked = attachment_check(file=upload, name=name, size=upload.size)
        return Outcome(os.getpid(), checked=checked, file=path)
    except ServiceError as e:
        return Outcome(os.getpid(), error=(e.code, e.message, e.extra))


def too_large(limit: int) -> str:
    return f"A file may be at most {limit / (1024 * 1024):g} MiB."


def _parse(job: Job) -> tuple[Any, str, str]:
    """The one file of the body (field `file`), written to the job's folder
    as the parser streams it, and the name it goes by. The refusals are the
    ones the view answered when it parsed the body itself."""
    limit = settings.CHAT_ATTACHMENT_MAX_BYTES
    folder = Path(job.folder)

    class ToFolder(FileUploadHandler):
        """Each file of the body into a file of the job's folder, counted:
        past the limit the parser stops (a body that lies about its length)."""

        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def new_file(self, *args: Any, **kwargs: Any) -> None:
            super().new_file(*args, **kwargs)
            self.path = folder / f"file{self.count}"
            self.count += 1
            self.file = self.path.open("wb")  # closed by file_complete, or by the parser on StopUpload

        def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
            if start + len(raw_data) > limit:
                raise StopUpload(connection_reset=False)
            self.file.write(raw_data)

        def file_complete(self, file_size: int) -> UploadedFile:
            self.file.close()
            uploaded = UploadedFile(None, self.file_name, self.content_type, file_size, self.charset)
            uploaded.path = str(self.path)  # type: ignore[attr-defined]
            return uploaded

    post: Any = {}
    files: Any = {}
    if job.content_type.split(";")[0].strip().lower() == "multipart/form-data":
        meta = {"CONTENT_TYPE": job.content_type, "CONTENT_LENGTH": str(job.content_length)}
        with (folder / "body").open("rb") as body:
            parser = MultiPartParser(meta, body, [ToFolder()], settings.DEFAULT_CHARSET)
            post, files = parser.parse()
    uploads = files.getlist("file") if files else []
    if not uploads:
        if job.content_length > limit:
            raise ServiceError("too_large", too_large(limit))
        raise ServiceError("invalid", "Send one file, in the form field `file`.")
    if len(uploads) > 1:
        raise ServiceError("invalid", "One file per upload.")
    upload = uploads[0]
    upload.file = Path(upload.path).open("rb")  # noqa: SIM115 (closed by the caller's `with`)
    return upload, post.get("name") or upload.name or "", upload.path
