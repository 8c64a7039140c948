"""What the server sends: the frames of the protocol, as typed dicts.

``docs/protocol.md`` describes them for people; these are the same shapes
for mypy and for the code that builds them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict

from .models import Attachment, Message


class AttachmentObject(TypedDict):
    """A file sent with a message (protocol 1.2); width, height and
    thumbnail_url are null but for images."""

    id: int
    name: str
    size: int
    content_type: str
    url: str
    width: int | None
    height: int | None
    thumbnail_url: str | None


class MessageObject(TypedDict):
    """A message as `history`, `conversations` and `search` return it."""

    id: int
    kind: Literal["private", "broadcast"]
    # "from" is a keyword: the functional TypedDict syntax would be needed to
    # spell it, so it is added by message_object() below.
    to: str | None
    body: str
    sent_at: str
    edited_at: str | None
    attachments: list[AttachmentObject]
    delivered: NotRequired[bool]
    read: NotRequired[bool]


class MessageEvent(MessageObject):
    type: Literal["message"]
    stored: bool


class Ok(TypedDict, total=False):
    type: Literal["ok"]
    ref: Any


class Error(TypedDict):
    type: Literal["error"]
    ref: NotRequired[Any]
    code: str
    message: str


class Presence(TypedDict):
    type: Literal["presence"]
    username: str
    online: bool


class PresenceBatch(TypedDict):
    type: Literal["presence_batch"]
    online: list[str]
    offline: list[str]


class Receipt(TypedDict):
    type: Literal["receipt"]
    status: Literal["delivered", "read"]
    by: str
    id: NotRequired[int]
    up_to: NotRequired[int]


def timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC, e.g. 2026-11-25T15:04:05.123456+00:00; None stays None."""
    return value.isoformat(timespec="microseconds") if value is not None else None


def message_object(message: Message, *, viewer_id: int | None = None) -> MessageObject:
    """A message as replies show it.

    Needs `sender` and `recipient` loaded (select_related) to avoid a query
    each. A private message the viewer sent also says whether it was
    delivered and read, from the annotations `selectors.with_receipts` adds.
    """
    obj: dict[str, Any] = {
        "id": message.id,
        "kind": message.kind,
        "from": message.sender.username,
        "to": message.recipient.username if message.recipient is not None else None,
        "body": message.body,
        "sent_at": timestamp(message.sent_at),
        "edited_at": timestamp(message.edited_at),
        # Filled in for a whole page at once (selectors.attachments_fill).
        "attachments": [],
    }
    if viewer_id is not None and message.sender_id == viewer_id and message.kind == Message.Kind.PRIVATE:
        obj["delivered"] = bool(getattr(message, "receipt_delivered", False))
        obj["read"] = getattr(message, "receipt_read_up_to", 0) >= message.id
    return obj  # type: ignore[return-value]


def message_event(message: Message, *, stored: bool) -> MessageEvent:
    return {"type": "message", **message_object(message), "stored": stored}


# The columns `message_event_row` takes, in order, for a values_list() of
# Delivery rows: building thousands of Message and User instances costs more
# than the query when what waited at login goes out.
MESSAGE_ROW = (
    "message_id",
    "message__kind",
    "message__sender__username",
    "message__recipient__username",
    "message__body",
    "message__sent_at",
    "message__edited_at",
)


def message_event_row(row: tuple[Any, ...], *, stored: bool) -> MessageEvent:
    """`message_event` of one row of MESSAGE_ROW columns."""
    id_, kind, sender, recipient, body, sent_at, edited_at = row
    event: dict[str, Any] = {
        "type": "message",
        "id": id_,
        "kind": kind,
        "from": sender,
        "to": recipient,
        "body": body,
        "sent_at": timestamp(sent_at),
        "edited_at": timestamp(edited_at),
        "attachments": [],
        "stored": stored,
    }
    return event  # type: ignore[return-value]


def attachment_url(attachment_id: int, *, thumbnail: bool = False) -> str:
    """Where the file is downloaded (messaging/uploads.py checks who asks)."""
    return f"/files/{attachment_id}/thumbnail/" if thumbnail else f"/files/{attachment_id}/"


def attachment_object(attachment: Attachment) -> AttachmentObject:
    image = attachment.width is not None
    return {
        "id": attachment.pk,
        "name": attachment.name,
        "size": attachment.size,
        "content_type": attachment.content_type,
        "url": attachment_url(attachment.pk),
        "width": attachment.width,
        "height": attachment.height,
        "thumbnail_url": attachment_url(attachment.pk, thumbnail=True) if image and attachment.thumbnail else None,
    }


def error(code: str, message: str, *, ref: Any = None, **extra: Any) -> Error:
    return {"type": "error", "ref": ref, "code": code, "message": message, **extra}  # type: ignore[typeddict-item]


def presence(username: str, *, online: bool) -> Presence:
    return {"type": "presence", "username": username, "online": online}


def receipt_delivered(message_id: int, *, by: str) -> Receipt:
    return {"type": "receipt", "status": "delivered", "id": message_id, "by": by}


def receipt_read(up_to: int, *, by: str) -> Receipt:
    return {"type": "receipt", "status": "read", "by": by, "up_to": up_to}


def message_edited(message: Message) -> dict[str, Any]:
    return {"type": "message_edited", "id": message.id, "body": message.body, "edited_at": timestamp(message.edited_at)}


def message_deleted(message_id: int) -> dict[str, Any]:
    return {"type": "message_deleted", "id": message_id}


def typing(sender: str, *, typing: bool) -> dict[str, Any]:
    return {"type": "typing", "from": sender, "typing": typing}
