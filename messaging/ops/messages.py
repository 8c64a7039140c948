"""Messages: send, broadcast, edit, delete, ack, read, history, search,
conversations, typing. Those about one conversation take a room instead of
a user (`room` for `to` or `with`, protocol 1.2)."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from django.conf import settings

from accounts.models import User as UserModel
from core import metrics
from core.errors import ServiceError

from .. import events, selectors, services, wire
from ..frames import MAX_ID, Request
from ..lookups import read
from ..runtime import runtime
from .registry import Connection, op
from .rooms import room_id

CLIENT_ID_MAX = 64
TYPING_PAIRS = 64  # pairs a connection remembers for typing's repeat limit
TYPING_PER_SECOND = 3  # typing events one connection may cause a second, per pair


@op("send", lasting=True)
async def send(conn: Connection, request: Request) -> dict[str, Any]:
    if request.has("room"):
        return await _send_to_room(conn, request)
    to = request.username("to")
    sent = await runtime.writer.submit(services.SendRequest(sender=conn.me, to_username=to, **_message(request)))
    metrics.messages_accepted.labels("private").inc()
    metrics.deliveries.labels("live" if sent.live else "stored").inc()
    return {
        "id": sent.message.id,
        "delivered": "live" if sent.live else "stored",
        "sent_at": wire.timestamp(sent.message.sent_at),
    }


async def _send_to_room(conn: Connection, request: Request) -> dict[str, Any]:
    if request.has("to"):
        raise ServiceError("invalid", "Send to a user (to) or to a room (room), not both.")
    room = room_id(request)
    done = await runtime.writer.submit(services.RoomSendRequest(sender=conn.me, room_id=room, **_message(request)))
    return _fanned_out(done, "room")


@op("broadcast", lasting=True)
async def broadcast(conn: Connection, request: Request) -> dict[str, Any]:
    done = await runtime.writer.submit(services.BroadcastRequest(sender=conn.me, **_message(request)))
    return _fanned_out(done, "broadcast")


class MessageFields(TypedDict):
    body: str
    client_id: str | None
    reply_to: int | None
    attachments: tuple[int, ...]


def _message(request: Request) -> MessageFields:
    """The fields every kind of message takes, checked in one place."""
    return {
        "body": request.text("body", max_length=settings.CHAT_MAX_FRAME_BYTES),
        "client_id": request.optional_text("client_id", min_length=1, max_length=CLIENT_ID_MAX),
        "reply_to": _reply_to(request),
        "attachments": _attachments(request),
    }


def _fanned_out(done: services.Broadcasted, kind: str) -> dict[str, Any]:
    """The ok of a broadcast or a room message: how many got it live, and stored."""
    metrics.messages_accepted.labels(kind).inc()
    metrics.deliveries.labels("live").inc(done.live)
    metrics.deliveries.labels("stored").inc(done.stored)
    return {
        "id": done.message.id,
        "live": done.live,
        "stored": done.stored,
        "sent_at": wire.timestamp(done.message.sent_at),
    }


def _reply_to(request: Request) -> int | None:
    """A reply's target, if any (null: none, as absent)."""
    return request.optional_object_id("reply_to", unknown="unknown_message", nullable=True)


@op("edit", lasting=True)
async def edit(conn: Connection, request: Request) -> dict[str, Any]:
    message_id = request.integer("id", low=1)
    body = request.text("body", max_length=settings.CHAT_MAX_FRAME_BYTES)
    message = await events.run_then_push(services.message_edit, user=conn.me, message_id=message_id, body=body)
    return {"edited_at": wire.timestamp(message.edited_at)}


@op("delete", lasting=True, invalid="unknown_message")
async def delete(conn: Connection, request: Request) -> dict[str, Any]:
    message_id = request.integer("id", low=1)
    await events.run_then_push(services.message_delete, user=conn.me, message_id=message_id)
    return {}


@op("ack", lasting=True)
async def ack(conn: Connection, request: Request) -> dict[str, Any]:
    ids = request.id_list("ids")
    if ids:
        await runtime.writer.submit(services.AckRequest(user=conn.me, ids=ids))
        metrics.acks.inc(len(ids))
        conn.acked(ids)
    return {}


@op("read", lasting=True)
async def read_mark(conn: Connection, request: Request) -> dict[str, Any]:
    peer, room = await _conversation(request)
    up_to = request.integer("up_to")
    await runtime.writer.submit(services.ReadRequest(user=conn.me, peer=peer, up_to=up_to, room_id=room))
    return {}


@op("history")
async def history(conn: Connection, request: Request) -> dict[str, Any]:
    peer, room = await _conversation(request)
    before = request.optional_integer("before")
    limit = request.optional_integer("limit", low=1, high=100) or 50
    messages = await read(selectors.message_history, user=conn.me, peer=peer, room_id=room, before=before, limit=limit)
    return {"messages": messages}


@op("search")
async def search(conn: Connection, request: Request) -> dict[str, Any]:
    query = request.text("query", min_length=1, max_length=200)
    peer: Any = selectors.EVERY_CONVERSATION
    room = None
    if request.has("with") or request.has("room"):
        peer, room = await _conversation(request)
    before = request.optional_integer("before")
    limit = request.optional_integer("limit", low=1, high=100) or 20
    messages = await read(
        selectors.message_search, user=conn.me, query=query, peer=peer, room_id=room, before=before, limit=limit
    )
    return {"messages": messages}


@op("conversations", invalid="bad_request")
async def conversations(conn: Connection, request: Request) -> dict[str, Any]:
    return {"conversations": await read(selectors.conversation_list, user=conn.me)}


@op("typing")
async def typing(conn: Connection, request: Request) -> dict[str, Any]:
    if request.has("room"):
        return await _typing_in_room(conn, request)
    to = request.username("to")
    state = request.flag("typing", default=True)
    # Checked before any query: a flood of typing frames costs no database.
    if not _typing_allowed(conn, to, state):
        return {}
    recipient_id = await read(selectors.typing_recipient, sender=conn.me, username=to)
    if recipient_id is not None:
        await events.send_typing(recipient_id, sender=conn.me.username, typing=state)
    return {}


async def _typing_in_room(conn: Connection, request: Request) -> dict[str, Any]:
    if request.has("to"):
        raise ServiceError("invalid", "Type to a user (to) or in a room (room), not both.")
    room = room_id(request)
    state = request.flag("typing", default=True)
    # Paced like a pair, under a key no user name can be (frames refuse NUL).
    if not _typing_allowed(conn, f"\x00room {room}", state):
        return {}
    recipients = await read(selectors.room_typing_recipients, sender=conn.me, room_id=room)
    await events.send_typing_room(recipients, sender=conn.me.username, room_id=room, typing=state)
    return {}


def _typing_allowed(conn: Connection, to: str, state: bool) -> bool:
    """The contract lets the server drop repeats that come more often than
    once a second for a pair: a repeat of the state last passed on (true or
    false) within a second is dropped, and so is anything past
    TYPING_PER_SECOND events a second for the pair (a client flipping
    true/false as fast as it can)."""
    now = asyncio.get_running_loop().time()
    sent = conn.identity.typing_sent
    last = sent.get(to)
    window_start, count = now, 0
    if last is not None:
        last_state, sent_at, window_start, count = last
        if last_state == state and now - sent_at < 1.0:
            return False
        if now - window_start >= 1.0:
            window_start, count = now, 0
        if count >= TYPING_PER_SECOND:
            return False
    elif len(sent) >= TYPING_PAIRS:
        sent.clear()
    sent[to] = (state, now, window_start, count + 1)
    return True


def _attachments(request: Request) -> tuple[int, ...]:
    """The optional `attachments` of a send: ids of uploads (protocol 1.2).
    How many a message may carry is the service's rule; this only bounds
    the list a frame may hold."""
    if not request.has("attachments"):
        return ()
    value = request.content["attachments"]
    limit = settings.CHAT_ATTACHMENTS_PER_MESSAGE
    if not isinstance(value, list) or any(type(v) is not int or not 0 < v <= MAX_ID for v in value):
        raise request.bad("attachments", "a list of attachment ids")
    if len(value) > limit:
        raise ServiceError(request.invalid_code, f"A message carries at most {limit} attachments.")
    return tuple(value)


async def _conversation(request: Request) -> tuple[UserModel | None, int | None]:
    """`with` (a user, or None for the broadcasts) or `room`: (peer, room id)."""
    if not request.has("room"):
        return await _peer(request), None
    if request.has("with"):
        raise ServiceError("invalid", "Name a user or the broadcasts (with), or a room (room), not both.")
    return None, room_id(request)


async def _peer(request: Request) -> UserModel | None:
    """The `with` field: a user, or None for the broadcast conversation."""
    username = request.optional_username("with", required=True, nullable=True)
    if username is None:
        return None
    peer: UserModel | None = await read(selectors.user_by_name, username=username)
    return peer
