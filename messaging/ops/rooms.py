"""Rooms (protocol 1.2): room_create, rooms, room_members, room_add,
room_remove, room_leave, room_rename, room_admin; and react.

Sending to a room, its history, read mark, search and typing are the
message ops with a `room` field (``ops.messages``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from .. import events, selectors, services
from ..frames import Request
from ..lookups import read
from ..services.rooms import MAX_NAMES
from .registry import Connection, op

NAME_MAX = 1000  # before trimming; the service checks 1 to 100 after


def room_id(request: Request) -> int:
    """The `room` field: an id, unknown_room for one that cannot exist."""
    return request.object_id("room", unknown="unknown_room")


def _name(request: Request) -> str:
    return request.text("name", max_length=NAME_MAX)


@op("room_create", lasting=True)
async def room_create(conn: Connection, request: Request) -> dict[str, Any]:
    name = _name(request)
    members = request.username_list("members", min_items=0, max_items=MAX_NAMES) if request.has("members") else []
    created = await events.run_then_push(services.room_create, user=conn.me, name=name, usernames=members)
    return {"room": created.room, "refused": created.refused}


@op("rooms", invalid="bad_request")
async def rooms(conn: Connection, request: Request) -> dict[str, Any]:
    return {"rooms": await read(selectors.room_list, user=conn.me)}


@op("room_members", invalid="unknown_room")
async def room_members(conn: Connection, request: Request) -> dict[str, Any]:
    return {"members": await read(selectors.room_member_list, user=conn.me, room_id=room_id(request))}


@op("room_add", lasting=True)
async def room_add(conn: Connection, request: Request) -> dict[str, Any]:
    room = room_id(request)
    usernames = request.username_list("usernames", min_items=1, max_items=MAX_NAMES)
    done = await events.run_then_push(services.room_members_add, user=conn.me, room_id=room, usernames=usernames)
    return {"added": done.added, "refused": done.refused}


@op("room_remove", lasting=True)
async def room_remove(conn: Connection, request: Request) -> dict[str, Any]:
    room = room_id(request)
    username = request.username("username")
    await events.run_then_push(services.room_member_remove, user=conn.me, room_id=room, username=username)
    return {}


@op("room_leave", lasting=True, invalid="unknown_room")
async def room_leave(conn: Connection, request: Request) -> dict[str, Any]:
    await events.run_then_push(services.room_leave, user=conn.me, room_id=room_id(request))
    return {}


@op("room_rename", lasting=True)
async def room_rename(conn: Connection, request: Request) -> dict[str, Any]:
    room = room_id(request)
    name = _name(request)
    await events.run_then_push(services.room_rename, user=conn.me, room_id=room, name=name)
    return {}


@op("room_admin", lasting=True)
async def room_admin(conn: Connection, request: Request) -> dict[str, Any]:
    room = room_id(request)
    username = request.username("username")
    admin = request.flag("admin", default=None)
    await events.run_then_push(services.room_admin_set, user=conn.me, room_id=room, username=username, admin=admin)
    return {}


@op("react", lasting=True)
async def react(conn: Connection, request: Request) -> dict[str, Any]:
    message_id = request.object_id("id", unknown="unknown_message")
    emoji = request.text("emoji", max_length=settings.CHAT_MAX_FRAME_BYTES)
    on = request.flag("on", default=True)
    await events.run_then_push(services.message_react, user=conn.me, message_id=message_id, emoji=emoji, on=on)
    return {}
