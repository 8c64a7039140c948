"""Attachments: uploading a file, sending it with a message, removing it.

An upload is stored and recorded with no message; `send` and `broadcast`
then claim the sender's unsent uploads by id (`AttachmentClaims`, inside
the batch that stores the messages). Deleting a message, or its row going
away with an account, removes its files from the storage after the commit.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import storages
from django.db import transaction
from django.db.models import Sum
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from accounts.models import User as UserModel
from core.errors import ServiceError

from .. import files, wire
from ..models import Attachment, Message


def storage() -> Any:
    return storages["attachments"]


@dataclass(frozen=True)
class Checked:
    """An upload that passed every check that needs no database: what to store."""

    name: str
    content_type: str
    size: int
    picture: files.Picture | None


def attachment_check(*, file: IO[bytes], name: str, size: int) -> Checked:
    """Every check of one file that needs no database (the name, the type,
    the size, the bytes; an image is decoded and re-encoded). CPU-bound:
    the upload view runs it in an upload process (upload_worker)."""
    name = files.name_clean(name)
    content_type = files.content_type_of(name)
    limit = settings.CHAT_ATTACHMENT_MAX_BYTES
    if size > limit:
        raise ServiceError("too_large", f"{name} is larger than {_human(limit)}.")
    if size == 0:
        raise ServiceError("invalid", f"{name} is empty.")
    file.seek(0)
    head = file.read(64 * 1024)
    files.bytes_check(head, content_type, name)
    picture = files.image_process(file, content_type, name) if content_type in files.IMAGE_FORMATS else None
    return Checked(name, content_type, len(picture.data) if picture else size, picture)


def _quota_check(uploader: UserModel, size: int, now: datetime) -> None:
    since = now - timedelta(days=1)
    used = Attachment.objects.filter(uploader=uploader, created_at__gt=since).aggregate(n=Sum("size"))["n"] or 0
    limit = settings.CHAT_ATTACHMENT_BYTES_PER_DAY
    if used + size > limit:
        raise ServiceError(
            "rate_limited", f"You may upload {_human(limit)} a day; {_human(max(0, limit - used))} are left."
        )


def attachment_store(*, uploader: UserModel, file: IO[bytes], checked: Checked) -> Attachment:
    """Store a checked upload and record it, unsent. The daily quota is
    checked before the bytes go to the storage and again, serialized per
    user, when the row is written; a refused file is removed again."""
    now = timezone.now()
    _quota_check(uploader, checked.size, now)
    store = storage()
    _, ext = os.path.splitext(checked.name.lower())
    key = f"{uploader.pk}/{uuid.uuid4().hex}"
    saved: list[str] = []
    try:
        if checked.picture is not None:
            saved.append(store.save(f"{key}{ext}", ContentFile(checked.picture.data)))
            thumb_ext = ".png" if checked.picture.thumbnail_type == "image/png" else ".jpg"
            saved.append(store.save(f"{key}-thumb{thumb_ext}", ContentFile(checked.picture.thumbnail)))
        else:
            file.seek(0)
            saved.append(store.save(f"{key}{ext}", File(file, name=checked.name)))
        with transaction.atomic():
            # One upload of a user at a time past this point: the quota holds.
            type(uploader).objects.select_for_update().filter(pk=uploader.pk).first()
            _quota_check(uploader, checked.size, now)
            picture = checked.picture
            return Attachment.objects.create(
                uploader=uploader,
                name=checked.name,
                size=checked.size,
                content_type=checked.content_type,
                stored=saved[0],
                thumbnail=saved[1] if len(saved) > 1 else "",
                width=picture.width if picture else None,
                height=picture.height if picture else None,
                created_at=now,
            )
    except BaseException:
        _files_delete(saved)
        raise


def attachment_upload(*, uploader: UserModel, file: IO[bytes], name: str, size: int) -> Attachment:
    """Check, store and record one upload (for tests, commands and the
    view's thread): `attachment_check` then `attachment_store`."""
    checked = attachment_check(file=file, name=name, size=size)
    return attachment_store(uploader=uploader, file=file, checked=checked)


def _human(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB" if n >= 1024 * 1024 else f"{n:,} bytes"


class AttachmentClaims:
    """The attachments of one batch of sends: each request's ids must be
    the sender's own uploads not sent yet, at most
    CHAT_ATTACHMENTS_PER_MESSAGE, each in one request of the batch only.
    Loaded (and locked) in one query for the whole batch."""

    def __init__(self, wanted: dict[int, tuple[UserModel, Sequence[int]]]):
        self.wanted = wanted
        ids = {a for _, ids in wanted.values() for a in ids}
        self.rows: dict[int, Attachment] = {}
        if ids:
            query = Attachment.objects.filter(pk__in=ids, message__isnull=True)
            self.rows = {a.pk: a for a in query.select_for_update(of=("self",))}
        self.taken: dict[int, int] = {}  # attachment id -> request index
        self.claimed: dict[int, list[Attachment]] = {}

    def check(self, index: int) -> None:
        """Refuse the request at `index` if any of its ids may not be sent."""
        entry = self.wanted.get(index)
        if entry is None:
            return
        sender, ids = entry
        limit = settings.CHAT_ATTACHMENTS_PER_MESSAGE
        if len(ids) > limit:
            raise ServiceError("invalid", f"A message carries at most {limit} attachments.")
        if len(set(ids)) != len(ids):
            raise ServiceError("invalid", "The same attachment is listed twice.")
        for a in ids:
            row = self.rows.get(a)
            if row is None or row.uploader_id != sender.pk or a in self.taken:
                raise ServiceError("invalid", f"Attachment {a} is not an upload of yours that is still unsent.")

    def take(self, index: int) -> None:
        """Count the request's attachments as used (after `check` passed)."""
        entry = self.wanted.get(index)
        if entry is None:
            return
        self.claimed[index] = [self.rows[a] for a in entry[1]]
        for a in entry[1]:
            self.taken[a] = index

    def attach(self, index: int, message: Message, extras: wire.Extras) -> wire.Extras:
        """Point the request's attachments at its stored message; `extras`
        with them, for the message's event."""
        rows = self.claimed.get(index, [])
        for position, row in enumerate(rows):
            row.message, row.position = message, position
        if not rows:
            return extras
        return dataclasses.replace(extras, attachments={message.pk: [wire.attachment_object(a) for a in rows]})

    def save(self) -> None:
        rows = [row for claimed in self.claimed.values() for row in claimed]
        if rows:
            Attachment.objects.bulk_update(rows, ["message", "position"])


# Unsent uploads removed per transaction by attachments_unsent_prune.
PRUNE_BATCH = 1000


def attachments_unsent_prune(*, now: datetime | None = None) -> int:
    """Remove uploads never sent, older than CHAT_UNSENT_ATTACHMENT_SECONDS.

    In batches: a queryset's delete() loads every row it deletes (for the
    signal that removes the files), all at once; a day of abandoned uploads
    at 100,000 users could be a great many."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.CHAT_UNSENT_ATTACHMENT_SECONDS)
    stale = Attachment.objects.filter(message__isnull=True, created_at__lt=cutoff).order_by("pk")
    removed = 0
    while ids := list(stale.values_list("pk", flat=True)[:PRUNE_BATCH]):
        # Still unsent: one sent meanwhile stays (and leaves `stale`).
        count, _ = Attachment.objects.filter(pk__in=ids, message__isnull=True).delete()
        removed += count
    return removed


def attachments_of_message_delete(*, message_ids: Iterable[int]) -> int:
    """Remove the attachments of deleted messages (their files go after the commit)."""
    count, _ = Attachment.objects.filter(message__in=list(message_ids)).delete()
    return count


def attachment_delete(*, attachment_id: int) -> None:
    """Remove one attachment (the admin's delete)."""
    Attachment.objects.filter(pk=attachment_id).delete()


def _files_delete(names: Iterable[str]) -> None:
    store = storage()
    for name in names:
        if name:
            store.delete(name)


@receiver(post_delete, sender=Attachment)
def _files_follow_rows(sender: type, instance: Attachment, **kwargs: Any) -> None:
    """However a row goes (a deleted message, a cascade from an account),
    its files go too, once that is committed."""
    names = [instance.stored, instance.thumbnail]
    transaction.on_commit(lambda: _files_delete(names))
