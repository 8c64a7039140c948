"""People: blocks, who is online, who was around."""

from __future__ import annotations

from typing import Any

from .. import events, selectors, services
from ..frames import Request
from ..lookups import read
from .registry import Connection, op


@op("block", lasting=True)
async def block(conn: Connection, request: Request) -> dict[str, Any]:
    username = request.username("username")
    await events.run_then_push(services.block_create, blocker=conn.me, username=username)
    return {}


@op("unblock", lasting=True, invalid="bad_request")
async def unblock(conn: Connection, request: Request) -> dict[str, Any]:
    username = request.username("username")
    await events.run_then_push(services.block_delete, blocker=conn.me, username=username)
    return {}


@op("blocked", invalid="bad_request")
async def blocked(conn: Connection, request: Request) -> dict[str, Any]:
    return {"users": await read(selectors.blocked_usernames, user=conn.me)}


@op("online", invalid="bad_request")
async def online(conn: Connection, request: Request) -> dict[str, Any]:
    return {"users": await read(selectors.online_usernames)}


@op("recent", invalid="bad_request")
async def recent(conn: Connection, request: Request) -> dict[str, Any]:
    return {"users": await read(selectors.recent_users)}
