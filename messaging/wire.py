"""What the server sends: the frames of the protocol, as typed dicts.

``docs/protocol.md`` describes them for people; these are the same shapes
for mypy and for the code that builds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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


class ReplyTo(TypedDict):
    """What a reply shows of the message it answers (plus "from")."""

    id: int
    excerpt: str


# An emoji -> the names of those who reacted with it, sorted; emojis in the
# order of their first reaction.
Reactions = dict[str, list[str]]


class MessageObject(TypedDict):
    """A message as `history`, `conversations`, `search` and `rooms` return it."""

    id: int
    kind: Literal["private", "broadcast", "room"]
    # "from" is a keyword: the functional TypedDict syntax would be needed to
    # spell it, so it is added by message_object() below.
    to: str | None
    room: int | None
    body: str
    sent_at: str
    edited_at: str | None
    reply_to: ReplyTo | None
    reactions: Reactions
    attachments: list[AttachmentObject]
    delivered: NotRequired[bool]
    read: NotRequired[bool]


@dataclass(frozen=True)
class Extras:
    """What message objects show of other rows, loaded once for a whole page
    (``selectors.message_extras``): the messages replied to, by id, and the
    reactions of each message; the attachments of messages just sent (pages
    get theirs from ``selectors.attachments_fill``). Without them every
    object would cost a query."""

    replies: Mapping[int, ReplyTo] = field(default_factory=dict)
    reactions: Mapping[int, Reactions] = field(default_factory=dict)
    attachments: Mapping[int, list[AttachmentObject]] = field(default_factory=dict)

    def attachments_of(self, message_id: int) -> list[AttachmentObject]:
        return list(self.attachments.get(message_id, []))

    def reply(self, reply_to_id: int | None) -> ReplyTo | None:
        return self.replies.get(reply_to_id) if reply_to_id is not None else None

    def reactions_of(self, message_id: int) -> Reactions:
        return self.reactions.get(message_id, {})


NO_EXTRAS = Extras()


def reply_object(message_id: int, *, sender: str, body: str) -> ReplyTo:
    """A replied-to message: its first 100 characters as it is now ("" once deleted)."""
    return {"id": message_id, "from": sender, "excerpt": body[:100]}  # type: ignore[typeddict-unknown-key]


class RoomObject(TypedDict):
    """A room as one member sees it."""

    id: int
    name: str
    member_count: int
    admin: bool
    created_at: str
    last: MessageObject | None
    unread: int


RoomChange = Literal["created", "added", "removed", "left", "renamed", "admin"]


class RoomEvent(TypedDict):
    type: Literal["room"]
    change: RoomChange
    room: RoomObject
    username: str | None


class RoomMemberObject(TypedDict):
    username: str
    admin: bool
    online: bool


class ReactionEvent(TypedDict):
    type: Literal["reaction"]
    id: int
    emoji: str
    by: str
    on: bool


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


def message_object(message: Message, *, viewer_id: int | None = None, extras: Extras = NO_EXTRAS) -> MessageObject:
    """A message as replies show it.

    Needs `sender` and `recipient` loaded (select_related) and the page's
    `extras` to avoid a query each. A private message the viewer sent also
    says whether it was delivered and read, from the annotations
    `selectors.with_receipts` adds.
    """
    obj: dict[str, Any] = {
        "id": message.id,
        "kind": message.kind,
        "from": message.sender.username,
        "to": message.recipient.username if message.recipient is not None else None,
        "room": message.room_id,
        "body": message.body,
        "sent_at": timestamp(message.sent_at),
        "edited_at": timestamp(message.edited_at),
        "reply_to": extras.reply(message.reply_to_id),
        "reactions": extras.reactions_of(message.id),
        # A page's are filled in at once by selectors.attachments_fill.
        "attachments": extras.attachments_of(message.id),
    }
    if viewer_id is not None and message.sender_id == viewer_id and message.kind == Message.Kind.PRIVATE:
        obj["delivered"] = bool(getattr(message, "receipt_delivered", False))
        obj["read"] = getattr(message, "receipt_read_up_to", 0) >= message.id
    return obj  # type: ignore[return-value]


def message_event(message: Message, *, stored: bool, extras: Extras = NO_EXTRAS) -> MessageEvent:
    return {"type": "message", **message_object(message, extras=extras), "stored": stored}


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
    "message__room_id",
    "message__reply_to_id",
)
MESSAGE_ROW_REPLY_TO = MESSAGE_ROW.index("message__reply_to_id")


def message_event_row(row: tuple[Any, ...], *, stored: bool, extras: Extras = NO_EXTRAS) -> MessageEvent:
    """`message_event` of one row of MESSAGE_ROW columns."""
    id_, kind, sender, recipient, body, sent_at, edited_at, room_id, reply_to_id = row
    event: dict[str, Any] = {
        "type": "message",
        "id": id_,
        "kind": kind,
        "from": sender,
        "to": recipient,
        "room": room_id,
        "body": body,
        "sent_at": timestamp(sent_at),
        "edited_at": timestamp(edited_at),
        "reply_to": extras.reply(reply_to_id),
        "reactions": extras.reactions_of(id_),
        "attachments": extras.attachments_of(id_),
        "stored": stored,
    }
    return event  # type: ignore[return-value]


def message_id_of(frame: Mapping[str, Any]) -> int | None:
    """The id of a `message` event; None for any other frame."""
    return int(frame["id"]) if frame.get("type") == "message" else None


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


def typing(sender: str, *, typing: bool, room_id: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "typing", "from": sender, "typing": typing}
    if room_id is not None:
        frame["room"] = room_id
    return frame


def room_event(change: RoomChange, room: RoomObject, *, username: str | None = None) -> RoomEvent:
    return {"type": "room", "change": change, "room": room, "username": username}


def reaction(message_id: int, *, emoji: str, by: str, on: bool) -> ReactionEvent:
    return {"type": "reaction", "id": message_id, "emoji": emoji, "by": by, "on": on}
