"""The bare reference app: protocol v1's hot ops on Channels alone.

``login`` accepts any name (no password, no database) and joins the user's
group and the ``everyone`` group; ``send`` is a ``group_send`` to the
recipient's group; ``broadcast`` one to ``everyone``; ``ack`` is a no-op.
Rooms (1.2) are a Channels group each: ``room_create`` (and ``room_add``)
tells each member's connection, through its user group, to join the room's
group, which answers with a ``room`` event once it has; ``send`` with
``room`` is one ``group_send`` to the room's group.
No presence, nothing stored. A ``bench_pending: N`` field on ``login`` makes
it push N messages after the ``ok``, the floor for the drain scenario.
What the load generator measures here is what Channels (and
channels_redis) cost per message before any of the project's work.
"""

from __future__ import annotations

import itertools
import json
import os
from datetime import UTC, datetime
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.bare.settings")

import django  # noqa: E402

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

EVERYONE = "everyone"
_ids = itertools.count(1)
_rooms = itertools.count(1)  # unique within a process: enough for one bench run


def _group(username: str) -> str:
    return "u." + "".join(c if c.isalnum() or c in "-_." else "_" for c in username)[:90]


def _room_group(room: int) -> str:
    # The process id keeps two processes' room 1 apart (scale-out).
    return f"r.{os.getpid()}.{room}"


class BareConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # no type hints in channels: its classes are Any
    username = ""
    rooms: set[str]

    async def disconnect(self, code: int) -> None:
        # Leave the groups: a closed connection must not stay in `everyone`.
        if self.username:
            await self.channel_layer.group_discard(_group(self.username), self.channel_name)
            await self.channel_layer.group_discard(EVERYONE, self.channel_name)
        for group in getattr(self, "rooms", ()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame = json.loads(text_data or "")
            op = frame["type"]
        except (ValueError, KeyError, TypeError):
            await self.reply({"type": "error", "code": "bad_request"})
            return
        ref = frame.get("ref")
        if op == "login":
            if self.username:
                await self.reply({"type": "error", "ref": ref, "code": "already_logged_in"})
                return
            self.username = str(frame.get("username") or frame.get("token") or "anon")
            await self.channel_layer.group_add(_group(self.username), self.channel_name)
            await self.channel_layer.group_add(EVERYONE, self.channel_name)
            await self.reply({"type": "ok", "ref": ref, "username": self.username, "pending": 0})
            for _ in range(int(frame.get("bench_pending") or 0)):
                await self.push(next(_ids), "private", "bench", self.username, "waiting", stored=True)
        elif not self.username:
            await self.reply({"type": "error", "ref": ref, "code": "not_logged_in"})
        elif op == "send" and frame.get("room") is None:
            msg_id = next(_ids)
            event = {"type": "chat.message", "id": msg_id, "kind": "private", "from": self.username}
            event.update(to=frame.get("to"), body=frame.get("body"), sent_at=_now())
            await self.channel_layer.group_send(_group(str(frame.get("to"))), event)
            await self.reply({"type": "ok", "ref": ref, "id": msg_id, "delivered": "live"})
        elif op == "send" and frame.get("room") is not None:
            msg_id = next(_ids)
            event = {"type": "chat.message", "id": msg_id, "kind": "room", "from": self.username}
            event.update(to=None, room=frame["room"], body=frame.get("body"), sent_at=_now())
            await self.channel_layer.group_send(str(frame["room"]), event)
            await self.reply({"type": "ok", "ref": ref, "id": msg_id, "live": 0, "stored": 0})
        elif op in ("room_create", "room_add"):
            room = frame.get("room") or _room_group(next(_rooms))
            names = frame.get("members") or frame.get("usernames") or []
            if op == "room_create":
                await self.room_join({"room": room})
            for name in names:
                await self.channel_layer.group_send(_group(str(name)), {"type": "room.join", "room": room})
            result = {"room": {"id": room, "name": frame.get("name")}} if op == "room_create" else {}
            await self.reply({"type": "ok", "ref": ref, "added": names, "refused": [], **result})
        elif op == "broadcast":
            msg_id = next(_ids)
            event = {"type": "chat.message", "id": msg_id, "kind": "broadcast", "from": self.username}
            event.update(to=None, body=frame.get("body"), sent_at=_now())
            await self.channel_layer.group_send(EVERYONE, event)
            await self.reply({"type": "ok", "ref": ref, "id": msg_id, "live": 0, "stored": 0})
        else:  # ack and the rest: nothing to do
            await self.reply({"type": "ok", "ref": ref})

    async def room_join(self, event: dict[str, Any]) -> None:
        """Join a room's group, then say so (as the server's `room` event)."""
        if not hasattr(self, "rooms"):
            self.rooms = set()
        self.rooms.add(event["room"])
        await self.channel_layer.group_add(event["room"], self.channel_name)
        await self.reply({"type": "room", "change": "added", "room": {"id": event["room"]}, "username": self.username})

    async def chat_message(self, event: dict[str, Any]) -> None:
        if event["kind"] in ("broadcast", "room") and event["from"] == self.username:
            return
        await self.push(event["id"], event["kind"], event["from"], event["to"], event["body"], sent_at=event["sent_at"])

    async def push(
        self, msg_id: int, kind: str, sender: str, to: str | None, body: str, *, stored: bool = False, sent_at: str = ""
    ) -> None:
        frame = {"type": "message", "id": msg_id, "kind": kind, "from": sender, "to": to, "body": body}
        frame.update(sent_at=sent_at or _now(), stored=stored)
        await self.send(text_data=json.dumps(frame))

    async def reply(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame))


def _now() -> str:
    return datetime.now(UTC).isoformat()


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/chat/", BareConsumer.as_asgi())])})
